"""Runs authlib doing a client_credentials grant with private_key_jwt
against ROTAGATE_TOKEN_URL, and prints one JSON line:
{"status": <HTTP status or 0>, "access_token"?: "...", "error"?: "..."}.

Input, all from the environment: ROTAGATE_TOKEN_URL, ROTAGATE_CLIENT_ID,
ROTAGATE_PRIVATE_PEM (the client's private key, PKCS#8 PEM), ROTAGATE_ALG,
ROTAGATE_EXPIRES_IN (the assertion's lifetime in seconds; "default" keeps
authlib's own, 3600 s in 1.2.0). The key is never printed.
"""
import json
import os
import sys

from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign

env = os.environ
expires_in = env.get("ROTAGATE_EXPIRES_IN", "default")


class Assertion(PrivateKeyJWT):
    """authlib's PrivateKeyJWT, with the lifetime set per assertion."""

    def sign(self, auth, token_endpoint):
        if expires_in == "default":
            return super().sign(auth, token_endpoint)
        return private_key_jwt_sign(
            auth.client_secret,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            expires_in=int(expires_in),
        )


statuses = []
try:
    session = OAuth2Session(
        env["ROTAGATE_CLIENT_ID"],
        env["ROTAGATE_PRIVATE_PEM"],
        token_endpoint_auth_method="private_key_jwt",
    )
    session.register_client_auth_method(Assertion(env["ROTAGATE_TOKEN_URL"], alg=env["ROTAGATE_ALG"]))
    session.hooks["response"].append(lambda r, *a, **k: statuses.append(r.status_code))
    token = session.fetch_token(env["ROTAGATE_TOKEN_URL"], grant_type="client_credentials")
    print(json.dumps({"status": statuses[-1], "access_token": token["access_token"]}))
except Exception as e:  # the outcome is the output, whatever failed
    print(json.dumps({"status": statuses[-1] if statuses else 0, "error": getattr(e, "error", None) or type(e).__name__}))
sys.exit(0)
