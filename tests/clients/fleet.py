"""A fleet of load balancers set up through boto3's `elb` client, as an operator's script makes
it, then each one's listener asked once for a stickiness cookie.

Usage: fleet.py ENDPOINT ACCESS_KEY SECRET_KEY PREFIX COUNT PORT_OFFSET HOSTS_CERT HOSTS_KEY ID...
  Creates PREFIX-0 … PREFIX-(COUNT-1), one after the other, each with an HTTP listener on port
  80 (instance port 80), instances ID… registered, an LB cookie policy set on the listener
  (CreateLoadBalancer, RegisterInstancesWithLoadBalancer, CreateLBCookieStickinessPolicy,
  SetLoadBalancerPoliciesOfListener; each answered once in force). Then reads where each load
  balancer listens from the control service's /v1/hosts (with an Envoy's client certificate
  HOSTS_CERT / HOSTS_KEY) and sends one GET to each listener (port 80 + PORT_OFFSET).
  The control service is verified with AWS_CA_BUNDLE, as the aws CLI does.
Prints the setup time of each load balancer (ms) as it goes, then a summary: the median setup
of the first and last 50, p50/p99 over all, and how many listeners answered with an AWSELB cookie.
"""
import os
import ssl
import statistics
import sys
import time
import urllib.request

import boto3

endpoint, access_key, secret_key, prefix, count, offset, hosts_cert, hosts_key, *ids = sys.argv[1:]
count, offset = int(count), int(offset)
elb = boto3.client(
    "elb",
    endpoint_url=endpoint,
    region_name="eu-west-2",
    aws_access_key_id=access_key,
    aws_secret_access_key=secret_key,
)

setups = []
for n in range(count):
    name = f"{prefix}-{n}"
    started = time.monotonic()
    elb.create_load_balancer(
        LoadBalancerName=name,
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstanceProtocol": "HTTP", "InstancePort": 80}],
    )
    elb.register_instances_with_load_balancer(
        LoadBalancerName=name, Instances=[{"InstanceId": i} for i in ids]
    )
    elb.create_lb_cookie_stickiness_policy(LoadBalancerName=name, PolicyName="sticky", CookieExpirationPeriod=600)
    elb.set_load_balancer_policies_of_listener(LoadBalancerName=name, LoadBalancerPort=80, PolicyNames=["sticky"])
    setups.append((time.monotonic() - started) * 1000)
    print(f"{name} {setups[-1]:.0f} ms", flush=True)

context = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
context.load_cert_chain(hosts_cert, hosts_key)
hosts = urllib.request.urlopen(f"{endpoint}/v1/hosts", context=context, timeout=10).read().decode()
addresses = {}
for line in hosts.splitlines():
    fields = line.split()
    if len(fields) >= 2 and fields[1].endswith(".lbu.sticky.internal"):
        addresses[fields[1].removesuffix(".lbu.sticky.internal")] = fields[0]

sticky = 0
for n in range(count):
    name = f"{prefix}-{n}"
    address = addresses.get(name)
    if address is None:
        print(f"{name}: not in /v1/hosts")
        continue
    try:
        answer = urllib.request.urlopen(f"http://{address}:{80 + offset}/", timeout=10)
        cookies = answer.headers.get_all("Set-Cookie") or []
        if any(c.startswith("AWSELB=") for c in cookies):
            sticky += 1
        else:
            print(f"{name} at {address}: no AWSELB cookie")
    except OSError as error:
        print(f"{name} at {address}: {error}")

ordered = sorted(setups)
first, last = setups[: min(50, count)], setups[-min(50, count) :]
print(
    f"setup median: first {len(first)} {statistics.median(first):.0f} ms, last {len(last)} "
    f"{statistics.median(last):.0f} ms; p50 {ordered[len(ordered) // 2]:.0f} ms, "
    f"p99 {ordered[min(len(ordered) - 1, round(len(ordered) * 0.99))]:.0f} ms"
)
print(f"served with stickiness: {sticky} of {count}")
