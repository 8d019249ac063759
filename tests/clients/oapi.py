"""One OAPI call with osc-sdk-python's Gateway, unchanged: prints its JSON answer.

Usage: oapi.py ENDPOINT ACCESS_KEY SECRET_KEY CALL JSON_PARAMETERS
"""
import json
import sys

from osc_sdk_python import Gateway
from osc_sdk_python.credentials import Endpoint

endpoint, access_key, secret_key, call, parameters = sys.argv[1:6]
gateway = Gateway(
    access_key=access_key,
    secret_key=secret_key,
    region="eu-west-2",
    protocol=endpoint.split("://")[0],
    endpoints=Endpoint(api=f"{endpoint}/api/v1"),
    max_retries=0,
)
print(json.dumps(getattr(gateway, call)(**json.loads(parameters))))
