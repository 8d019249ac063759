"""Drives the control service with boto3's `elb` client, unchanged: create policies, set one on
the listener, describe, delete; and checks the error codes boto3 sees.

Usage: boto3_elb.py ENDPOINT ACCESS_KEY SECRET_KEY
"""
import sys

import boto3
import botocore.exceptions

endpoint, access_key, secret_key = sys.argv[1:4]
LB = "terraform-balancer"


def client(secret=secret_key):
    return boto3.client(
        "elb",
        endpoint_url=endpoint,
        region_name="eu-west-2",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
    )


elb = client()


def error_of(call, **kwargs):
    try:
        call(**kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{call.__name__} succeeded")


elb.create_lb_cookie_stickiness_policy(LoadBalancerName=LB, PolicyName="LBCookie", CookieExpirationPeriod=10)
elb.create_app_cookie_stickiness_policy(LoadBalancerName=LB, PolicyName="AppCookie", CookieName="session")
elb.set_load_balancer_policies_of_listener(LoadBalancerName=LB, LoadBalancerPort=80, PolicyNames=["LBCookie"])

described = elb.describe_load_balancers(LoadBalancerNames=[LB])["LoadBalancerDescriptions"][0]
assert described["LoadBalancerName"] == LB, described
assert described["ListenerDescriptions"][0]["PolicyNames"] == ["LBCookie"], described
assert described["ListenerDescriptions"][0]["Listener"]["LoadBalancerPort"] == 80, described
assert described["Policies"]["LBCookieStickinessPolicies"] == [
    {"PolicyName": "LBCookie", "CookieExpirationPeriod": 10}
], described
assert described["Policies"]["AppCookieStickinessPolicies"] == [
    {"PolicyName": "AppCookie", "CookieName": "session"}
], described
assert described["Instances"] == [{"InstanceId": "i-1"}], described

policies = elb.describe_load_balancer_policies(LoadBalancerName=LB)["PolicyDescriptions"]
assert {p["PolicyName"]: p["PolicyTypeName"] for p in policies} == {
    "AppCookie": "AppCookieStickinessPolicyType",
    "LBCookie": "LBCookieStickinessPolicyType",
}, policies

assert error_of(elb.delete_load_balancer_policy, LoadBalancerName=LB, PolicyName="LBCookie") == (
    "InvalidConfigurationRequest",
    409,
)
elb.set_load_balancer_policies_of_listener(LoadBalancerName=LB, LoadBalancerPort=80, PolicyNames=[])
assert elb.describe_load_balancers()["LoadBalancerDescriptions"][0]["ListenerDescriptions"][0]["PolicyNames"] == []
elb.delete_load_balancer_policy(LoadBalancerName=LB, PolicyName="LBCookie")
remaining = elb.describe_load_balancer_policies(LoadBalancerName=LB)["PolicyDescriptions"]
assert [p["PolicyName"] for p in remaining] == ["AppCookie"], remaining

assert error_of(elb.describe_load_balancers, LoadBalancerNames=["nope"]) == ("LoadBalancerNotFound", 400)
assert error_of(
    elb.create_app_cookie_stickiness_policy, LoadBalancerName=LB, PolicyName="AppCookie", CookieName="x"
) == ("DuplicatePolicyName", 400)
assert error_of(
    elb.create_app_cookie_stickiness_policy, LoadBalancerName=LB, PolicyName="Bad", CookieName="a;b"
) == ("ValidationError", 400)
assert error_of(
    elb.set_load_balancer_policies_of_listener, LoadBalancerName=LB, LoadBalancerPort=80, PolicyNames=["Nope"]
) == ("PolicyNotFound", 400)
assert error_of(
    elb.set_load_balancer_policies_of_listener, LoadBalancerName=LB, LoadBalancerPort=81, PolicyNames=[]
) == ("ListenerNotFound", 400)
assert error_of(
    elb.register_instances_with_load_balancer, LoadBalancerName=LB, Instances=[{"InstanceId": "i-nope"}]
) == ("InvalidInstance", 400)
assert error_of(client("wrong").describe_load_balancers) == ("SignatureDoesNotMatch", 403)

health = elb.configure_health_check(
    LoadBalancerName=LB,
    HealthCheck={"Target": "HTTP:80/health", "Interval": 5, "Timeout": 2, "UnhealthyThreshold": 2, "HealthyThreshold": 2},
)["HealthCheck"]
assert health["Target"] == "HTTP:80/health", health
states = elb.describe_instance_health(LoadBalancerName=LB)["InstanceStates"]
assert [s["InstanceId"] for s in states] == ["i-1"], states
assert states[0]["State"] in ("InService", "OutOfService"), states

print("boto3 elb client: all calls and error codes as expected")
