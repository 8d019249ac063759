"""Drives the control service's OAPI with osc-sdk-python's Gateway, unchanged: the load
balancer calls Terraform's Outscale provider makes, checked against the OAPI specification the
SDK ships; the same state seen through the LBU/ELB Query API (boto3) both ways; OAPI's errors
for bad input, which change nothing; a bad signature refused.

Usage: osc_sdk_oapi.py ENDPOINT ACCESS_KEY SECRET_KEY
"""
import json
import os
import sys

import boto3
import osc_sdk_python
import requests
import ruamel.yaml
from osc_sdk_python import Gateway
from osc_sdk_python.credentials import Endpoint

endpoint, access_key, secret_key = sys.argv[1:4]
LB = "oapi-balancer"

spec_file = os.path.join(os.path.dirname(osc_sdk_python.__file__), "resources", "outscale.yaml")
SCHEMAS = ruamel.yaml.YAML(typ="safe").load(open(spec_file))["components"]["schemas"]


def gateway(secret=secret_key):
    return Gateway(
        access_key=access_key,
        secret_key=secret,
        region="eu-west-2",
        protocol="http",
        endpoints=Endpoint(api=f"{endpoint}/api/v1"),
        max_retries=0,
    )


gw = gateway()
elb = boto3.client(
    "elb",
    endpoint_url=endpoint,
    region_name="eu-west-2",
    aws_access_key_id=access_key,
    aws_secret_access_key=secret_key,
)


def conforms(value, schema_name):
    """Every field of the answer is one the specification names for it (recursively)."""
    schema = SCHEMAS[schema_name]
    properties = schema.get("properties", {})
    for key, item in value.items():
        assert key in properties, f"{schema_name} has no field {key}: {sorted(properties)}"
        spec = properties[key]
        ref = spec.get("$ref") or spec.get("items", {}).get("$ref")
        if ref:
            name = ref.split("/")[-1]
            for element in item if isinstance(item, list) else [item]:
                conforms(element, name)


def answer(call, **kwargs):
    result = getattr(gw, call)(**kwargs)
    conforms(result, f"{call}Response")
    assert result["ResponseContext"]["RequestId"], result
    return result


def error_of(call, gw=gw, **kwargs):
    """OAPI's error shape: the first error's Type and Code, and the HTTP status."""
    try:
        gw.raw(call, **kwargs)
    except requests.HTTPError as e:
        body = e.response.json()
        assert body["ResponseContext"]["RequestId"], body
        error = body["Errors"][0]
        assert error["Details"], body
        return error["Type"], error["Code"], e.response.status_code
    raise AssertionError(f"{call} {kwargs} succeeded")


def read():
    found = answer("ReadLoadBalancers", Filters={"LoadBalancerNames": [LB]})["LoadBalancers"]
    return found[0] if found else None


# Terraform's outscale_load_balancer: CreateLoadBalancer with its listeners, subregion and tags.
created = answer(
    "CreateLoadBalancer",
    LoadBalancerName=LB,
    Listeners=[{"BackendPort": 80, "BackendProtocol": "HTTP", "LoadBalancerPort": 80, "LoadBalancerProtocol": "HTTP"}],
    SubregionNames=["eu-west-2a"],
    Tags=[{"Key": "env", "Value": "test"}],
)["LoadBalancer"]
assert created["LoadBalancerName"] == LB, created
assert created["Listeners"][0]["LoadBalancerPort"] == 80, created
assert created["Tags"] == [{"Key": "env", "Value": "test"}], created
assert created["DnsName"] == f"{LB}.lbu.sticky.internal", created
# What Terraform declared reads back as declared (its provider replaces a load balancer whose
# subregion_names, subnets or load_balancer_type read back different), in LBU's view too.
assert created["SubregionNames"] == ["eu-west-2a"], created
assert created["LoadBalancerType"] == "internet-facing", created
lbu_description = elb.describe_load_balancers(LoadBalancerNames=[LB])["LoadBalancerDescriptions"][0]
assert lbu_description["AvailabilityZones"] == ["eu-west-2a"], lbu_description
assert lbu_description["Scheme"] == "internet-facing", lbu_description
internal = answer(
    "CreateLoadBalancer",
    LoadBalancerName="internal-lb",
    Listeners=[{"BackendPort": 80, "BackendProtocol": "HTTP", "LoadBalancerPort": 80, "LoadBalancerProtocol": "HTTP"}],
    LoadBalancerType="internal",
    Subnets=["subnet-1a2b3c4d"],
    SecurityGroups=["sg-1", "sg-2"],
)["LoadBalancer"]
assert (internal["LoadBalancerType"], internal["Subnets"], internal["SecurityGroups"], internal["SubregionNames"]) == (
    "internal", ["subnet-1a2b3c4d"], ["sg-1", "sg-2"], []
), internal
lbu_description = elb.describe_load_balancers(LoadBalancerNames=["internal-lb"])["LoadBalancerDescriptions"][0]
assert (lbu_description["Scheme"], lbu_description["Subnets"], lbu_description["SecurityGroups"]) == (
    "internal", ["subnet-1a2b3c4d"], ["sg-1", "sg-2"]
), lbu_description
answer("DeleteLoadBalancer", LoadBalancerName="internal-lb")

# outscale_load_balancer_vms (provider 1.8: Link; 1.1: Register), data source outscale_load_balancer_vm_health.
answer("LinkLoadBalancerBackendMachines", LoadBalancerName=LB, BackendVmIds=["i-1"])
answer("RegisterVmsInLoadBalancer", LoadBalancerName=LB, BackendVmIds=["i-2"])
assert sorted(read()["BackendVmIds"]) == ["i-1", "i-2"], read()
health = answer("ReadVmsHealth", LoadBalancerName=LB)["BackendVmHealth"]
assert sorted(h["VmId"] for h in health) == ["i-1", "i-2"], health
assert all(h["State"] in ("UP", "DOWN", "UNKNOWN") for h in health), health
answer("UnlinkLoadBalancerBackendMachines", LoadBalancerName=LB, BackendVmIds=["i-2"])
assert read()["BackendVmIds"] == ["i-1"], read()

# outscale_load_balancer_policy: an app-cookie policy, attached with UpdateLoadBalancer.
policy = answer(
    "CreateLoadBalancerPolicy", LoadBalancerName=LB, PolicyName="app-session", PolicyType="app", CookieName="session"
)["LoadBalancer"]
assert policy["ApplicationStickyCookiePolicies"] == [{"CookieName": "session", "PolicyName": "app-session"}], policy
updated = answer("UpdateLoadBalancer", LoadBalancerName=LB, LoadBalancerPort=80, PolicyNames=["app-session"])
assert updated["LoadBalancer"]["Listeners"][0]["PolicyNames"] == ["app-session"], updated

# One domain model: LBU sees OAPI's policy, OAPI sees LBU's.
described = elb.describe_load_balancer_policies(LoadBalancerName=LB)["PolicyDescriptions"]
assert [p["PolicyName"] for p in described] == ["app-session"], described
listener = elb.describe_load_balancers(LoadBalancerNames=[LB])["LoadBalancerDescriptions"][0]["ListenerDescriptions"][0]
assert listener["PolicyNames"] == ["app-session"], listener
elb.create_lb_cookie_stickiness_policy(LoadBalancerName=LB, PolicyName="lbu-cookie", CookieExpirationPeriod=120)
assert read()["LoadBalancerStickyCookiePolicies"] == [{"CookieExpirationPeriod": 120, "PolicyName": "lbu-cookie"}], read()
# A load_balancer policy with OAPI's default period (1: the browser session).
answer("CreateLoadBalancerPolicy", LoadBalancerName=LB, PolicyName="session-cookie", PolicyType="load_balancer")
session = [p for p in read()["LoadBalancerStickyCookiePolicies"] if p["PolicyName"] == "session-cookie"]
assert session == [{"CookieExpirationPeriod": 1, "PolicyName": "session-cookie"}], session
lbu_view = elb.describe_load_balancer_policies(LoadBalancerName=LB, PolicyNames=["session-cookie"])
assert lbu_view["PolicyDescriptions"][0]["PolicyTypeName"] == "LBCookieStickinessPolicyType", lbu_view

# outscale_load_balancer_attributes: the health check (OAPI's ranges: up to 600 s) and secured cookies.
check = {"CheckInterval": 600, "HealthyThreshold": 3, "Path": "/health", "Port": 80, "Protocol": "HTTP", "Timeout": 5, "UnhealthyThreshold": 4}
updated = answer("UpdateLoadBalancer", LoadBalancerName=LB, HealthCheck=check, SecuredCookies=True)["LoadBalancer"]
assert updated["HealthCheck"] == check, updated
assert updated["SecuredCookies"] is True, updated
assert elb.describe_load_balancers(LoadBalancerNames=[LB])["LoadBalancerDescriptions"][0]["HealthCheck"]["Target"] == "HTTP:80/health"

# Tags.
answer("CreateLoadBalancerTags", LoadBalancerNames=[LB], Tags=[{"Key": "team", "Value": "web"}])
tags = answer("ReadLoadBalancerTags", LoadBalancerNames=[LB])["Tags"]
assert sorted((t["Key"], t["Value"]) for t in tags) == [("env", "test"), ("team", "web")], tags
answer("DeleteLoadBalancerTags", LoadBalancerNames=[LB], Tags=[{"Key": "env"}])
assert [t["Key"] for t in answer("ReadLoadBalancerTags", LoadBalancerNames=[LB])["Tags"]] == ["team"]

# Listeners.
answer(
    "CreateLoadBalancerListeners",
    LoadBalancerName=LB,
    Listeners=[{"BackendPort": 8080, "LoadBalancerPort": 8081, "LoadBalancerProtocol": "HTTP"}],
)
assert sorted(l["LoadBalancerPort"] for l in read()["Listeners"]) == [80, 8081], read()
answer("DeleteLoadBalancerListeners", LoadBalancerName=LB, LoadBalancerPorts=[8081])

# Bad input: OAPI's errors, and nothing changes.
before = json.dumps(read(), sort_keys=True)
assert error_of("UpdateLoadBalancer", LoadBalancerName=LB, LoadBalancerPort="eighty", PolicyNames=[]) == ("InvalidParameterValue", "4108", 400)
bad_check = dict(check, CheckInterval=601)
assert error_of("UpdateLoadBalancer", LoadBalancerName=LB, HealthCheck=bad_check) == ("InvalidParameterValue", "4047", 400)
assert error_of("UpdateLoadBalancer", LoadBalancerName=LB, PolicyNames=[]) == ("MissingParameter", "7000", 400)
assert error_of("UpdateLoadBalancer", LoadBalancerName=LB, LoadBalancerPort=80, PolicyNames=["nope"]) == ("InvalidResource", "5056", 400)
assert error_of("CreateLoadBalancerPolicy", LoadBalancerName=LB, PolicyName="x", PolicyType="other") == ("InvalidParameterValue", "4047", 400)
assert error_of("CreateLoadBalancerPolicy", LoadBalancerName=LB, PolicyName="x", PolicyType="app") == ("MissingParameter", "7000", 400)
assert error_of("CreateLoadBalancerPolicy", LoadBalancerName=LB, PolicyName="app-session", PolicyType="app", CookieName="s") == ("ResourceConflict", "9021", 409)
assert error_of("ReadLoadBalancers", Bogus=1) == ("InvalidParameterValue", "4045", 400)
assert error_of("ReadVmsHealth", LoadBalancerName="no-such-balancer") == ("InvalidResource", "5030", 400)
assert error_of("CreateLoadBalancer", LoadBalancerName=LB, Listeners=[{"BackendPort": 70000, "LoadBalancerPort": 80, "LoadBalancerProtocol": "HTTP"}]) == ("InvalidParameterValue", "4047", 400)
assert error_of("CreateLoadBalancer", LoadBalancerName=LB, Listeners=[{"BackendPort": 81, "LoadBalancerPort": 80, "LoadBalancerProtocol": "HTTP"}]) == ("ResourceConflict", "9013", 409)
assert error_of("NoSuchCall") == ("InvalidResource", "5011", 400)
listeners = [{"BackendPort": 80, "LoadBalancerPort": 80, "LoadBalancerProtocol": "HTTP"}]
for placement in (
    {"SubregionNames": ["eu-west-2a"], "Subnets": ["subnet-1"]},
    {"SubregionNames": ["eu-west-2a", "eu-west-2a"]},
    {"SecurityGroups": [""]},
    {"LoadBalancerType": "public"},
):
    assert error_of("CreateLoadBalancer", LoadBalancerName="refused-lb", Listeners=listeners, **placement) == (
        "InvalidParameterValue", "4047", 400
    ), placement
assert answer("ReadLoadBalancers", Filters={"LoadBalancerNames": ["refused-lb"]})["LoadBalancers"] == []
assert error_of("ReadLoadBalancers", gw=gateway("not-the-secret")) == ("AccessDenied", "1", 401)
assert json.dumps(read(), sort_keys=True) == before, "a refused call changed nothing"

# An empty PolicyNames removes stickiness; then the load balancer goes.
updated = answer("UpdateLoadBalancer", LoadBalancerName=LB, LoadBalancerPort=80, PolicyNames=[])
assert updated["LoadBalancer"]["Listeners"][0]["PolicyNames"] == [], updated
deleted = answer("DeleteLoadBalancer", LoadBalancerName=LB)["LoadBalancer"]
assert deleted["LoadBalancerName"] == LB, deleted
assert read() is None
print("osc-sdk-python drove every OAPI load balancer call")
