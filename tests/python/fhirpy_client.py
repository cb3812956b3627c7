"""fhirpy (sync client) against a running Portico: read, filtered search, paging with fetch_all,
count() (which sends _count=0), and _include. Prints what it saw as one JSON object; the Rust test
(tests/clients.rs) compares it with plain SQL over the same database.

Usage: python fhirpy_client.py FHIR_BASE_URL
"""

import json
import sys

from fhirpy import SyncFHIRClient


def main(base, token):
    client = SyncFHIRClient(base, authorization=f"Bearer {token}")
    seen = {}

    patient = client.reference("Patient", "1").to_resource()
    seen["read"] = {
        "resourceType": patient["resourceType"],
        "id": patient["id"],
        "family": patient["name"][0].get("family"),
    }

    # Small pages, so fetch_all follows many next links.
    females = client.resources("Patient").search(gender="female").limit(7).fetch_all()
    seen["female_ids"] = [p["id"] for p in females]
    seen["female_genders"] = sorted({p["gender"] for p in females})
    seen["female_count"] = client.resources("Patient").search(gender="female").count()
    everyone = client.resources("Patient").limit(9).fetch_all()
    seen["patient_ids"] = [p["id"] for p in everyone]
    seen["patient_count"] = client.resources("Patient").count()

    bundle = (
        client.resources("Appointment")
        .search(patient="1")
        .include("Appointment", "patient")
        .limit(100)
        .fetch_raw()
    )
    entries = bundle.get("entry", [])
    seen["include"] = {
        "matches": [
            e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"
        ],
        "included": [
            e["resource"]["resourceType"] + "/" + e["resource"]["id"]
            for e in entries
            if e["search"]["mode"] == "include"
        ],
        "subjects": sorted(
            {
                p["actor"]["reference"]
                for e in entries
                if e["search"]["mode"] == "match"
                for p in e["resource"]["participant"]
                if p.get("actor", {}).get("reference", "").startswith("Patient/")
            }
        ),
    }
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
