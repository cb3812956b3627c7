"""fhirclient (PyPI, smart-on-fhir/client-py; R4 models) against a running Portico: the
CapabilityStatement and a Patient parsed into its R4 models, a search whose pages it follows
through next links. Prints what it saw as one JSON object; the Rust test (tests/clients.rs)
compares it with plain SQL over the same database.

Usage: python fhirclient_client.py FHIR_BASE_URL
"""

import json
import sys
import warnings

from fhirclient import client
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.patient import Patient


def main(base, token):
    smart = client.FHIRClient(
        settings={"app_id": "portico-tests", "api_base": base.rstrip("/") + "/"}
    )
    # fhirclient sends its session's headers with every request: the bearer token goes there.
    smart.server.session.headers["Authorization"] = f"Bearer {token}"
    seen = {}

    statement = CapabilityStatement.read_from("metadata", smart.server)
    seen["fhirVersion"] = statement.fhirVersion
    seen["types"] = sorted(r.type for r in statement.rest[0].resource)

    patient = Patient.read("1", smart.server)
    seen["read"] = {
        "id": patient.id,
        "family": patient.name[0].family,
        "gender": patient.gender,
        "birthDate": patient.birthDate.isostring if patient.birthDate else None,
    }

    # perform_resources follows next links in this version; pages of 7 make several.
    search = Patient.where(struct={"gender": "female", "_count": "7"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        found = search.perform_resources(smart.server)
    seen["female"] = [
        {"resourceType": r.resource_type, "id": r.id, "gender": getattr(r, "gender", None)}
        for r in found
    ]
    pages = list(search.perform_iter(smart.server))
    seen["pages"] = len(pages)
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
