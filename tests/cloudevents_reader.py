#!/usr/bin/env python3
"""An independent CloudEvents reader: the official Python SDK's Kafka binding.

Reads one Kafka record as JSON on stdin -- {"headers": {name: base64}, "key": base64|null,
"value": base64} -- decodes it with cloudevents.kafka (binary or structured mode, as the
content-type says) and prints the event's attributes and data as JSON on stdout.
Used by tests/tests/publish.rs to check our records against a reader we did not write.
"""
import base64
import json
import sys

from cloudevents.kafka import KafkaMessage, from_binary, from_structured


def main() -> None:
    record = json.load(sys.stdin)
    headers = {k: base64.b64decode(v) for k, v in record["headers"].items()}
    key = base64.b64decode(record["key"]) if record.get("key") is not None else None
    value = base64.b64decode(record["value"])
    message = KafkaMessage(headers=headers, key=key, value=value)
    content_type = headers.get("content-type", b"").decode()
    if content_type.startswith("application/cloudevents"):
        event = from_structured(message)
    else:
        event = from_binary(message)
    attributes = {k: (v if isinstance(v, str) else str(v)) for k, v in event.get_attributes().items()}
    if isinstance(attributes.get("partitionkey"), str) and attributes["partitionkey"].startswith("b'"):
        attributes["partitionkey"] = key.decode()
    json.dump({"attributes": attributes, "data": event.get_data()}, sys.stdout, default=str)


if __name__ == "__main__":
    main()
