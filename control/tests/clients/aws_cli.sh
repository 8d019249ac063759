#!/usr/bin/env bash
# Drives the control service with the aws CLI (`aws elb …`), unchanged.
# Usage: aws_cli.sh AWS_BINARY ENDPOINT ACCESS_KEY SECRET_KEY
set -euo pipefail
aws="$1"; endpoint="$2"
export AWS_ACCESS_KEY_ID="$3" AWS_SECRET_ACCESS_KEY="$4" AWS_DEFAULT_REGION=eu-west-2
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_PAGER=""
lb=terraform-balancer
"$aws" elb create-lb-cookie-stickiness-policy --endpoint-url "$endpoint" --load-balancer-name "$lb" --policy-name CliCookie --cookie-expiration-period 30
"$aws" elb set-load-balancer-policies-of-listener --endpoint-url "$endpoint" --load-balancer-name "$lb" --load-balancer-port 80 --policy-names CliCookie
out="$("$aws" elb describe-load-balancers --endpoint-url "$endpoint" --load-balancer-names "$lb" --output json)"
grep -q '"CliCookie"' <<<"$out" || { echo "policy missing from: $out" >&2; exit 1; }
if err="$("$aws" elb delete-load-balancer-policy --endpoint-url "$endpoint" --load-balancer-name "$lb" --policy-name CliCookie 2>&1)"; then
  echo "deleting a policy in use succeeded" >&2; exit 1
fi
grep -q InvalidConfigurationRequest <<<"$err" || { echo "unexpected error: $err" >&2; exit 1; }
# An empty list removes stickiness. (Omitting --policy-names is refused by the CLI itself, before
# anything is sent: the parameter is required in botocore's model.)
if err="$("$aws" elb set-load-balancer-policies-of-listener --endpoint-url "$endpoint" --load-balancer-name "$lb" --load-balancer-port 80 2>&1)"; then
  echo "the aws CLI sent a call without --policy-names" >&2; exit 1
fi
grep -q 'required: --policy-names' <<<"$err" || { echo "unexpected error: $err" >&2; exit 1; }
"$aws" elb set-load-balancer-policies-of-listener --endpoint-url "$endpoint" --load-balancer-name "$lb" --load-balancer-port 80 --policy-names '[]'
out="$("$aws" elb describe-load-balancers --endpoint-url "$endpoint" --load-balancer-names "$lb" --output json)"
python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["LoadBalancerDescriptions"][0]["ListenerDescriptions"][0]["PolicyNames"]; sys.exit(0 if p == [] else "policy still set: %s" % p)' <<<"$out"
"$aws" elb delete-load-balancer-policy --endpoint-url "$endpoint" --load-balancer-name "$lb" --policy-name CliCookie
# The rest of the API, as an operator's scripts call it.
e=(--endpoint-url "$endpoint")
"$aws" elb create-load-balancer-policy "${e[@]}" --load-balancer-name "$lb" --policy-name Bounded \
  --policy-type-name LBCookieStickinessPolicyType \
  --policy-attributes AttributeName=CookieExpirationPeriod,AttributeValue=20 AttributeName=CookieMaxLifetime,AttributeValue=60
out="$("$aws" elb describe-load-balancer-policies "${e[@]}" --load-balancer-name "$lb" --policy-names Bounded --output json)"
grep -q '"CookieMaxLifetime"' <<<"$out" || { echo "max lifetime missing from: $out" >&2; exit 1; }
out="$("$aws" elb describe-load-balancer-policy-types "${e[@]}" --output json)"
grep -q '"AppCookieStickinessPolicyType"' <<<"$out" || { echo "policy types: $out" >&2; exit 1; }
"$aws" elb modify-load-balancer-attributes "${e[@]}" --load-balancer-name "$lb" \
  --load-balancer-attributes '{"ConnectionDraining":{"Enabled":true,"Timeout":60},"AdditionalAttributes":[{"Key":"sticky.session_draining.enabled","Value":"true"},{"Key":"sticky.cookie.partitioned","Value":"true"},{"Key":"sticky.cookie.secure","Value":"true"}]}' >/dev/null
out="$("$aws" elb describe-load-balancer-attributes "${e[@]}" --load-balancer-name "$lb" --output json)"
python3 -c 'import json,sys; a=json.load(sys.stdin)["LoadBalancerAttributes"]; d={x["Key"]: x["Value"] for x in a["AdditionalAttributes"]}; sys.exit(0 if a["ConnectionDraining"]=={"Enabled":True,"Timeout":60} and d["sticky.cookie.partitioned"]=="true" else "attributes: %s" % a)' <<<"$out"
# Zones and scheme, as Terraform's aws_elb declares them, read back as declared.
"$aws" elb create-load-balancer "${e[@]}" --load-balancer-name zoned --scheme internal \
  --listeners Protocol=HTTP,LoadBalancerPort=8090,InstanceProtocol=HTTP,InstancePort=80 \
  --availability-zones eu-west-2a eu-west-2b >/dev/null
out="$("$aws" elb describe-load-balancers "${e[@]}" --load-balancer-names zoned --output json)"
python3 -c 'import json,sys; d=json.load(sys.stdin)["LoadBalancerDescriptions"][0]; sys.exit(0 if (d["AvailabilityZones"], d["Scheme"]) == (["eu-west-2a","eu-west-2b"], "internal") else "placement: %s" % d)' <<<"$out"
if err="$("$aws" elb create-load-balancer "${e[@]}" --load-balancer-name unzoned --scheme public \
  --listeners Protocol=HTTP,LoadBalancerPort=8091,InstanceProtocol=HTTP,InstancePort=80 2>&1)"; then
  echo "a scheme other than internet-facing or internal was accepted" >&2; exit 1
fi
grep -q ValidationError <<<"$err" || { echo "unexpected error: $err" >&2; exit 1; }
"$aws" elb delete-load-balancer "${e[@]}" --load-balancer-name zoned
"$aws" elb add-tags "${e[@]}" --load-balancer-names "$lb" --tags Key=env,Value=prod
out="$("$aws" elb describe-tags "${e[@]}" --load-balancer-names "$lb" --output json)"
grep -q '"prod"' <<<"$out" || { echo "tags: $out" >&2; exit 1; }
"$aws" elb remove-tags "${e[@]}" --load-balancer-names "$lb" --tags Key=env
if err="$("$aws" elb apply-security-groups-to-load-balancer "${e[@]}" --load-balancer-name "$lb" --security-groups sg-1 2>&1)"; then
  echo "a refused action succeeded" >&2; exit 1
fi
grep -q 'UnsupportedOperation.*not supported by this service' <<<"$err" || { echo "unexpected error: $err" >&2; exit 1; }
echo "aws CLI: all calls as expected"
