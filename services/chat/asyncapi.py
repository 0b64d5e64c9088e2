"""Write services/chat/asyncapi.json from the code.

`python -m services.chat.asyncapi` writes what
`faststream docs gen --factory services.chat.main:asyncapi_app -o services/chat/asyncapi.json`
writes (the same schema; keys sorted so that the file is stable), without needing the
`faststream[cli]` extra. tests/chat/test_asyncapi.py fails when the file in the repo is stale.
"""

import json
from pathlib import Path
from typing import Any

from services.chat.main import asyncapi_app

PATH = Path(__file__).with_name("asyncapi.json")


def generate() -> dict[str, Any]:
    schema: dict[str, Any] = asyncapi_app().schema.to_specification().to_jsonable()
    return schema


def main() -> None:
    with PATH.open("w", encoding="utf-8") as fh:
        json.dump(generate(), fh, indent=2, sort_keys=True)
        fh.write("\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
