"""The rest of the classic ELB API through boto3's `elb` client, unchanged: every operation in
botocore's model answers (implemented, or refused with UnsupportedOperation and a reason);
attributes, tags, the generic policy calls, connection and session draining as ELB shapes them.

Usage: boto3_elb_rest.py ENDPOINT ACCESS_KEY SECRET_KEY
"""
import sys

import boto3
import botocore.exceptions

endpoint, access_key, secret_key = sys.argv[1:4]
LB = "terraform-balancer"

elb = boto3.client(
    "elb",
    endpoint_url=endpoint,
    region_name="eu-west-2",
    aws_access_key_id=access_key,
    aws_secret_access_key=secret_key,
)


def error_of(call, **kwargs):
    try:
        call(**kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Message"]
    raise AssertionError(f"{call.__name__} succeeded")


# Every operation of botocore's model answers: implemented, or refused with a reason.
REFUSED = {
    "ApplySecurityGroupsToLoadBalancer": dict(LoadBalancerName=LB, SecurityGroups=["sg-1"]),
    "AttachLoadBalancerToSubnets": dict(LoadBalancerName=LB, Subnets=["subnet-1"]),
    "DetachLoadBalancerFromSubnets": dict(LoadBalancerName=LB, Subnets=["subnet-1"]),
    "EnableAvailabilityZonesForLoadBalancer": dict(LoadBalancerName=LB, AvailabilityZones=["eu-west-2a"]),
    "DisableAvailabilityZonesForLoadBalancer": dict(LoadBalancerName=LB, AvailabilityZones=["eu-west-2a"]),
}
operations = set(elb.meta.service_model.operation_names)
method_of = {api: method for method, api in elb.meta.method_to_api_mapping.items()}
assert len(operations) == 29, sorted(operations)
for name, kwargs in REFUSED.items():
    assert name in operations, name
    method = getattr(elb, method_of[name])
    code, status, message = error_of(method, **kwargs)
    assert (code, status) == ("UnsupportedOperation", 400), (name, code, status)
    assert "not supported by this service" in message, message
implemented = operations - set(REFUSED)
assert len(implemented) == 24, sorted(implemented)
# An HTTPS listener's certificate: one that is not uploaded is ELB's CertificateNotFound.
code, status, message = error_of(
    elb.set_load_balancer_listener_ssl_certificate, LoadBalancerName=LB, LoadBalancerPort=443, SSLCertificateId="arn:x"
)
assert (code, status) == ("CertificateNotFound", 400), (code, status, message)

# DescribeAccountLimits.
limits = {l["Name"]: l["Max"] for l in elb.describe_account_limits()["Limits"]}
assert int(limits["classic-load-balancers"]) > 0, limits

# Tags.
elb.add_tags(LoadBalancerNames=[LB], Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "web"}])
elb.add_tags(LoadBalancerNames=[LB], Tags=[{"Key": "env", "Value": "staging"}])
tags = elb.describe_tags(LoadBalancerNames=[LB])["TagDescriptions"]
assert tags == [{"LoadBalancerName": LB, "Tags": [{"Key": "env", "Value": "staging"}, {"Key": "team", "Value": "web"}]}], tags
elb.remove_tags(LoadBalancerNames=[LB], Tags=[{"Key": "team"}, {"Key": "absent"}])
tags = elb.describe_tags(LoadBalancerNames=[LB])["TagDescriptions"][0]["Tags"]
assert tags == [{"Key": "env", "Value": "staging"}], tags
assert error_of(elb.add_tags, LoadBalancerNames=[LB], Tags=[{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])[:2] == ("DuplicateTagKeys", 400)
assert error_of(elb.add_tags, LoadBalancerNames=[LB], Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(10)])[:2] == ("TooManyTags", 400)
assert error_of(elb.add_tags, LoadBalancerNames=[LB], Tags=[{"Key": "aws:x", "Value": "v"}])[:2] == ("ValidationError", 400)
assert error_of(elb.describe_tags, LoadBalancerNames=["nope"])[:2] == ("LoadBalancerNotFound", 400)
assert elb.describe_tags(LoadBalancerNames=[LB])["TagDescriptions"][0]["Tags"] == [{"Key": "env", "Value": "staging"}], "a refused call changed nothing"

# Policy types and the generic CreateLoadBalancerPolicy.
types = elb.describe_load_balancer_policy_types()["PolicyTypeDescriptions"]
assert sorted(t["PolicyTypeName"] for t in types) == ["AppCookieStickinessPolicyType", "LBCookieStickinessPolicyType", "SSLNegotiationPolicyType"], types
lb_type = elb.describe_load_balancer_policy_types(PolicyTypeNames=["LBCookieStickinessPolicyType"])["PolicyTypeDescriptions"][0]
assert [a["AttributeName"] for a in lb_type["PolicyAttributeTypeDescriptions"]] == ["CookieExpirationPeriod", "CookieMaxLifetime"], lb_type
assert error_of(elb.describe_load_balancer_policy_types, PolicyTypeNames=["NopeType"])[:2] == ("PolicyTypeNotFound", 400)
elb.create_load_balancer_policy(
    LoadBalancerName=LB,
    PolicyName="Bounded",
    PolicyTypeName="LBCookieStickinessPolicyType",
    PolicyAttributes=[
        {"AttributeName": "CookieExpirationPeriod", "AttributeValue": "20"},
        {"AttributeName": "CookieMaxLifetime", "AttributeValue": "60"},
    ],
)
elb.create_load_balancer_policy(
    LoadBalancerName=LB,
    PolicyName="Flask",
    PolicyTypeName="AppCookieStickinessPolicyType",
    PolicyAttributes=[{"AttributeName": "CookieName", "AttributeValue": "session"}],
)
described = {p["PolicyName"]: p for p in elb.describe_load_balancer_policies(LoadBalancerName=LB)["PolicyDescriptions"]}
assert described["Bounded"]["PolicyAttributeDescriptions"] == [
    {"AttributeName": "CookieExpirationPeriod", "AttributeValue": "20"},
    {"AttributeName": "CookieMaxLifetime", "AttributeValue": "60"},
], described
assert described["Flask"]["PolicyTypeName"] == "AppCookieStickinessPolicyType", described
lbd = elb.describe_load_balancers(LoadBalancerNames=[LB])["LoadBalancerDescriptions"][0]
assert lbd["Policies"]["LBCookieStickinessPolicies"] == [{"PolicyName": "Bounded", "CookieExpirationPeriod": 20}], lbd
code, status, message = error_of(
    elb.create_load_balancer_policy, LoadBalancerName=LB, PolicyName="Proxy", PolicyTypeName="ProxyProtocolPolicyType",
    PolicyAttributes=[{"AttributeName": "ProxyProtocol", "AttributeValue": "true"}],
)
assert (code, status) == ("InvalidConfigurationRequest", 409) and "not supported" in message, (code, message)
assert error_of(elb.create_load_balancer_policy, LoadBalancerName=LB, PolicyName="X", PolicyTypeName="NopeType")[:2] == ("PolicyTypeNotFound", 400)
assert error_of(
    elb.create_load_balancer_policy, LoadBalancerName=LB, PolicyName="X", PolicyTypeName="LBCookieStickinessPolicyType",
    PolicyAttributes=[{"AttributeName": "CookieName", "AttributeValue": "x"}],
)[:2] == ("InvalidConfigurationRequest", 409)
assert error_of(
    elb.create_load_balancer_policy, LoadBalancerName=LB, PolicyName="X", PolicyTypeName="LBCookieStickinessPolicyType",
    PolicyAttributes=[{"AttributeName": "CookieMaxLifetime", "AttributeValue": "-5"}],
)[:2] == ("ValidationError", 400)
assert error_of(
    elb.create_load_balancer_policy, LoadBalancerName=LB, PolicyName="X", PolicyTypeName="AppCookieStickinessPolicyType",
    PolicyAttributes=[{"AttributeName": "CookieName", "AttributeValue": "AWSELB"}],
)[:2] == ("InvalidConfigurationRequest", 409)
elb.set_load_balancer_policies_for_backend_server(LoadBalancerName=LB, InstancePort=80, PolicyNames=[])
assert error_of(
    elb.set_load_balancer_policies_for_backend_server, LoadBalancerName=LB, InstancePort=80, PolicyNames=["Bounded"]
)[:2] == ("InvalidConfigurationRequest", 409)

# Attributes: ELB's defaults, then draining, idle timeout and the cookie keys.
attributes = elb.describe_load_balancer_attributes(LoadBalancerName=LB)["LoadBalancerAttributes"]
assert attributes["ConnectionDraining"] == {"Enabled": False, "Timeout": 300}, attributes
assert attributes["ConnectionSettings"] == {"IdleTimeout": 60}, attributes
assert attributes["CrossZoneLoadBalancing"] == {"Enabled": False}, attributes
assert attributes["AccessLog"]["Enabled"] is False, attributes
additional = {a["Key"]: a["Value"] for a in attributes["AdditionalAttributes"]}
assert additional["sticky.cookie.name"] == "AWSELB" and additional["sticky.cookie.samesite"] == "Lax", additional
answer = elb.modify_load_balancer_attributes(
    LoadBalancerName=LB,
    LoadBalancerAttributes={
        "ConnectionDraining": {"Enabled": True, "Timeout": 30},
        "ConnectionSettings": {"IdleTimeout": 120},
        "AdditionalAttributes": [
            {"Key": "sticky.session_draining.enabled", "Value": "true"},
            {"Key": "sticky.cookie.secure", "Value": "true"},
            {"Key": "sticky.cookie.samesite", "Value": "None"},
            {"Key": "sticky.cookie.cors_twin", "Value": "true"},
            {"Key": "sticky.session.header", "Value": "X-Sticky-Session"},
        ],
    },
)
assert answer["LoadBalancerName"] == LB, answer
assert answer["LoadBalancerAttributes"]["ConnectionDraining"] == {"Enabled": True, "Timeout": 30}, answer
attributes = elb.describe_load_balancer_attributes(LoadBalancerName=LB)["LoadBalancerAttributes"]
additional = {a["Key"]: a["Value"] for a in attributes["AdditionalAttributes"]}
assert additional["sticky.session.header"] == "x-sticky-session", additional
assert additional["sticky.cookie.samesite"] == "None", additional
assert attributes["ConnectionSettings"] == {"IdleTimeout": 120}, attributes
for bad, expected in [
    ({"ConnectionDraining": {"Enabled": True, "Timeout": 0}}, "ValidationError"),
    ({"ConnectionSettings": {"IdleTimeout": 5000}}, "ValidationError"),
    ({"AccessLog": {"Enabled": True, "S3BucketName": "logs"}}, "InvalidConfigurationRequest"),
    ({"AdditionalAttributes": [{"Key": "sticky.cookie.secure", "Value": "false"}]}, "InvalidConfigurationRequest"),
    ({"AdditionalAttributes": [{"Key": "sticky.cookie.domain", "Value": "a b"}]}, "ValidationError"),
    ({"AdditionalAttributes": [{"Key": "sticky.cookie.name", "Value": "session"}]}, "InvalidConfigurationRequest"),
    ({"AdditionalAttributes": [{"Key": "sticky.nope", "Value": "1"}]}, "ValidationError"),
]:
    code = error_of(elb.modify_load_balancer_attributes, LoadBalancerName=LB, LoadBalancerAttributes=bad)[0]
    assert code == expected, (bad, code)
assert elb.describe_load_balancer_attributes(LoadBalancerName=LB)["LoadBalancerAttributes"] == attributes, "refused calls changed nothing"
assert error_of(elb.describe_load_balancer_attributes, LoadBalancerName="nope")[:2] == ("LoadBalancerNotFound", 400)

# Connection draining: a deregistered instance is draining, and DescribeInstanceHealth says so.
elb.register_instances_with_load_balancer(LoadBalancerName=LB, Instances=[{"InstanceId": "i-2"}])
remaining = elb.deregister_instances_from_load_balancer(LoadBalancerName=LB, Instances=[{"InstanceId": "i-2"}])["Instances"]
assert remaining == [{"InstanceId": "i-1"}], remaining
states = {s["InstanceId"]: s for s in elb.describe_instance_health(LoadBalancerName=LB)["InstanceStates"]}
assert set(states) == {"i-1", "i-2"}, states
assert "deregistration currently in progress" in states["i-2"]["Description"], states["i-2"]
assert "sticky sessions" in states["i-2"]["Description"], states["i-2"]
# Registering it again ends its drain.
elb.register_instances_with_load_balancer(LoadBalancerName=LB, Instances=[{"InstanceId": "i-2"}])
print("boto3 elb client: the rest of the API as expected")
