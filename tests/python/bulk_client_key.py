"""Makes the RS384 key pair smart-fetch signs its Backend Services assertions with (tests/clients.rs).

Writes the private JWKS, in the shape smart-fetch looks for (kid, alg and key_ops "sign"), to the
path given as the only argument, and prints the public JWKS: what Portico registers for the client.
"""

import json
import sys
import uuid

from jwcrypto import jwk

key = jwk.JWK.generate(kty="RSA", size=2048, kid=str(uuid.uuid4()), alg="RS384", use="sig")
private = key.export_private(as_dict=True)
private["key_ops"] = ["sign"]
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"keys": [private]}, out)
print(json.dumps({"keys": [key.export_public(as_dict=True)]}))
