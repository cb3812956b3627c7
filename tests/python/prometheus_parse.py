"""Parses Prometheus text (stdin) with prometheus_client's parser and prints its families as JSON.

Used by tests/clients.rs to check /metrics with a parser that is not Portico's: any line the
parser refuses makes it raise, and the script exit non-zero.
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "samples": [
            {"name": sample.name, "labels": sample.labels, "value": sample.value}
            for sample in family.samples
        ],
    }
print(json.dumps(families))
