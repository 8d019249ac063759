"""Server certificates and HTTPS listeners through boto3's `iam` and `elb` clients, unchanged, as
an operator's script makes the calls.

Usage: certificates.py ENDPOINT ACCESS_KEY SECRET_KEY COMMAND ARGS...
  upload NAME BODY_FILE KEY_FILE [CHAIN_FILE]   iam UploadServerCertificate
  list                                         iam ListServerCertificates
  get NAME                                     iam GetServerCertificate
  rename NAME NEW_NAME                         iam UpdateServerCertificate
  delete NAME                                  iam DeleteServerCertificate
  create-https NAME PORT CERTIFICATE_ARN       elb CreateLoadBalancer, one HTTPS listener -> HTTP 80
  create NAME PROTOCOL:PORT:INSTANCE_PROTOCOL[:CERTIFICATE_ARN]...
                                               elb CreateLoadBalancer with these listeners (-> port 80)
  set-certificate NAME PORT CERTIFICATE_ARN    elb SetLoadBalancerListenerSSLCertificate
  describe NAME                                elb DescribeLoadBalancers: its listener descriptions
  ssl-policy NAME POLICY ATTRIBUTE=VALUE...    elb CreateLoadBalancerPolicy (SSLNegotiationPolicyType)
  set-policies NAME PORT [POLICY...]           elb SetLoadBalancerPoliciesOfListener
  policies NAME [POLICY...]                    elb DescribeLoadBalancerPolicies (NAME "-": the samples)
Prints the answer as JSON; a refused call prints {"error": CODE, "message": MESSAGE}.
"""
import json
import sys

import boto3
import botocore.exceptions

endpoint, access_key, secret_key, command, *args = sys.argv[1:]
session = dict(
    endpoint_url=endpoint,
    region_name="eu-west-2",
    aws_access_key_id=access_key,
    aws_secret_access_key=secret_key,
)
iam = boto3.client("iam", **session)
elb = boto3.client("elb", **session)


def read(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def run():
    if command == "upload":
        name, body, key, *chain = args
        extra = {"CertificateChain": read(chain[0])} if chain else {}
        answer = iam.upload_server_certificate(
            ServerCertificateName=name, CertificateBody=read(body), PrivateKey=read(key), **extra
        )
        return answer["ServerCertificateMetadata"]
    if command == "list":
        return iam.list_server_certificates()["ServerCertificateMetadataList"]
    if command == "get":
        return iam.get_server_certificate(ServerCertificateName=args[0])["ServerCertificate"]
    if command == "rename":
        iam.update_server_certificate(ServerCertificateName=args[0], NewServerCertificateName=args[1])
        return {}
    if command == "delete":
        iam.delete_server_certificate(ServerCertificateName=args[0])
        return {}
    if command == "create-https":
        name, port, arn = args
        listener = {
            "Protocol": "HTTPS",
            "LoadBalancerPort": int(port),
            "InstanceProtocol": "HTTP",
            "InstancePort": 80,
            "SSLCertificateId": arn,
        }
        return elb.create_load_balancer(LoadBalancerName=name, Listeners=[listener])["DNSName"]
    if command == "create":
        listeners = []
        for spec in args[1:]:
            protocol, port, instance_protocol, *arn = spec.split(":", 3)
            listener = {
                "Protocol": protocol,
                "LoadBalancerPort": int(port),
                "InstanceProtocol": instance_protocol,
                "InstancePort": 80,
            }
            if arn:
                listener["SSLCertificateId"] = arn[0]
            listeners.append(listener)
        return elb.create_load_balancer(LoadBalancerName=args[0], Listeners=listeners)["DNSName"]
    if command == "set-certificate":
        name, port, arn = args
        elb.set_load_balancer_listener_ssl_certificate(
            LoadBalancerName=name, LoadBalancerPort=int(port), SSLCertificateId=arn
        )
        return {}
    if command == "describe":
        described = elb.describe_load_balancers(LoadBalancerNames=[args[0]])
        return described["LoadBalancerDescriptions"][0]["ListenerDescriptions"]
    if command == "ssl-policy":
        name, policy, *pairs = args
        attributes = [dict(zip(("AttributeName", "AttributeValue"), p.split("=", 1))) for p in pairs]
        elb.create_load_balancer_policy(
            LoadBalancerName=name,
            PolicyName=policy,
            PolicyTypeName="SSLNegotiationPolicyType",
            PolicyAttributes=attributes,
        )
        return {}
    if command == "set-policies":
        name, port, *policies = args
        elb.set_load_balancer_policies_of_listener(
            LoadBalancerName=name, LoadBalancerPort=int(port), PolicyNames=policies
        )
        return {}
    if command == "policies":
        name, *policies = args
        selection = {"LoadBalancerName": name} if name != "-" else {}
        if policies:
            selection["PolicyNames"] = policies
        return elb.describe_load_balancer_policies(**selection)["PolicyDescriptions"]
    raise SystemExit(f"unknown command {command}")


try:
    print(json.dumps(run(), default=str))
except botocore.exceptions.ClientError as error:
    print(json.dumps({"error": error.response["Error"]["Code"], "message": error.response["Error"]["Message"]}))
