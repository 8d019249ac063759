"""One classic ELB call through boto3's `elb` client, unchanged, as an operator's script makes it.

Usage: elb.py ENDPOINT ACCESS_KEY SECRET_KEY COMMAND ARGS...
  create NAME PORT...              CreateLoadBalancer, HTTP listeners PORT -> instance port 80
  add-listener NAME PORT           CreateLoadBalancerListeners
  delete-listener NAME PORT        DeleteLoadBalancerListeners
  register NAME ID...              RegisterInstancesWithLoadBalancer
  deregister NAME ID...            DeregisterInstancesFromLoadBalancer
  lb-policy NAME PORT SECONDS      CreateLBCookieStickinessPolicy + SetLoadBalancerPoliciesOfListener
  app-policy NAME PORT COOKIE      CreateAppCookieStickinessPolicy + SetLoadBalancerPoliciesOfListener
  burst PREFIX COUNT               CreateLoadBalancer PREFIX-0 … PREFIX-(COUNT-1), one after the
                                   other: prints "acknowledged NAME" as each is answered, "failed
                                   NAME: ERROR" when one fails (after boto3's own retries), and goes on
Prints the answer's DNSName (create) and the x-sticky-not-in-force header when present.
"""
import sys

import boto3

endpoint, access_key, secret_key, command, *args = sys.argv[1:]
elb = boto3.client(
    "elb",
    endpoint_url=endpoint,
    region_name="eu-west-2",
    aws_access_key_id=access_key,
    aws_secret_access_key=secret_key,
)


def listener(port):
    return {"Protocol": "HTTP", "LoadBalancerPort": int(port), "InstanceProtocol": "HTTP", "InstancePort": 80}


def report(answer):
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    if "x-sticky-not-in-force" in headers:
        print("not in force:", headers["x-sticky-not-in-force"])


name = args[0]
if command == "burst":
    for i in range(int(args[1])):
        each = f"{name}-{i}"
        try:
            elb.create_load_balancer(LoadBalancerName=each, Listeners=[listener(80)])
            print("acknowledged", each, flush=True)
        except Exception as error:  # noqa: BLE001 - every failure is reported, none stops the burst
            print("failed", each + ":", str(error).replace("\n", " "), flush=True)
    sys.exit(0)
if command == "create":
    answer = elb.create_load_balancer(LoadBalancerName=name, Listeners=[listener(p) for p in args[1:]])
    print(answer["DNSName"])
elif command == "add-listener":
    answer = elb.create_load_balancer_listeners(LoadBalancerName=name, Listeners=[listener(args[1])])
elif command == "delete-listener":
    answer = elb.delete_load_balancer_listeners(LoadBalancerName=name, LoadBalancerPorts=[int(args[1])])
elif command == "register":
    answer = elb.register_instances_with_load_balancer(
        LoadBalancerName=name, Instances=[{"InstanceId": i} for i in args[1:]]
    )
elif command == "deregister":
    answer = elb.deregister_instances_from_load_balancer(
        LoadBalancerName=name, Instances=[{"InstanceId": i} for i in args[1:]]
    )
elif command == "lb-policy":
    port, seconds = args[1:3]
    policy = f"lb-{port}"
    elb.create_lb_cookie_stickiness_policy(
        LoadBalancerName=name, PolicyName=policy, CookieExpirationPeriod=int(seconds)
    )
    answer = elb.set_load_balancer_policies_of_listener(
        LoadBalancerName=name, LoadBalancerPort=int(port), PolicyNames=[policy]
    )
elif command == "app-policy":
    port, cookie = args[1:3]
    policy = f"app-{port}"
    elb.create_app_cookie_stickiness_policy(LoadBalancerName=name, PolicyName=policy, CookieName=cookie)
    answer = elb.set_load_balancer_policies_of_listener(
        LoadBalancerName=name, LoadBalancerPort=int(port), PolicyNames=[policy]
    )
else:
    sys.exit(f"unknown command {command}")
report(answer)
