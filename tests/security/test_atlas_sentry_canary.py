"""Atlas and Sentry (O01/O02, privacy: prompts and answers are never reported or stored): a note, a product
description and a model's answer carry canaries through a draft that works, one whose answer is invalid twice,
and one whose model client fails unexpectedly (an unhandled error: a Sentry event with the prompt's frames on the
stack). No envelope holds a canary, and no table but the stored draft's own introduction does.

Runs in a child process: Sentry's integrations patch the interpreter for good.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import TestDatabase
from tests.sentry_harness import run_child

NOTE, DESCRIPTION, ANSWER, DROPPED = ("zyxcanary note text", "zyxcanary product description",
                                      "zyxcanary invalid answer", "zyxcanary dropped field")


class _Client:
    """A bedrock-runtime stand-in that answers from a script (the provider's client is its dependency)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    def converse(self, **_: Any) -> dict[str, Any]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return {"output": {"message": {"role": "assistant", "content": [{"text": answer}]}}}


def run_atlas_sentry_scenario() -> None:
    """The child: three drafts through the API with a scripted model; reports statuses and the database's text."""
    from chalice.test import Client

    from chalicelib.atlas import drafting
    from chalicelib.atlas.bedrock import BedrockDrafter
    from chalicelib.db.pool import Database, use_database
    from tests.sentry_harness import capture, report

    capture()
    import app as app_module
    from tests.api.auth_helpers import Outbox, body_of, call, create_workspace, sign_in

    use_database(Database(os.environ["ATLAS_SENTRY_APP_URL"], size=1), "app")
    box = Outbox(Path(os.environ["DATA_DIR"]) / "outbox")
    good = json.dumps({"introduction": "Dear Grace.", "line_items": [{"sku": "PRO-1", "quantity": 1,
                                                                      "note": DROPPED}], "extra": DROPPED})
    scripted = _Client([good, ANSWER, ANSWER, RuntimeError("the model client broke")])
    drafting.use_drafter(BedrockDrafter("amazon.nova-lite-v1:0", scripted))
    with Client(app_module.app) as client:
        owner = sign_in(client, "atlas-sentry@example.test", box)
        workspace = create_workspace(client, owner)["id"]
        base = f"/workspaces/{workspace}"
        call(client, "PATCH", base, owner, {"atlas_enabled": True})
        call(client, "POST", base + "/products", owner, {"name": "Pro", "sku": "PRO-1", "unit_amount_minor": 1,
                                                          "currency": "EUR", "description": DESCRIPTION})
        lead = body_of(call(client, "POST", base + "/leads", owner, {"title": "Deal"}))["id"]
        call(client, "POST", base + "/notes", owner, {"body": NOTE, "lead_id": lead})
        statuses = [int(call(client, "POST", f"{base}/leads/{lead}/proposals/draft", owner).status_code)
                    for _ in range(3)]
    report(statuses=statuses)


def test_atlas_prompts_and_answers_reach_neither_sentry_nor_the_database(fresh_db: TestDatabase,
                                                                       tmp_path: Path) -> None:
    captured = run_child(__name__, "run_atlas_sentry_scenario",
                         {"ATLAS_SENTRY_APP_URL": fresh_db.app_url, "DATA_DIR": str(tmp_path)})
    assert captured["statuses"] == [201, 502, 500], captured["statuses"]
    assert captured["events"], "no Sentry event was captured: the sweep would prove nothing"
    text = "\n".join(captured["envelopes"]).lower()
    assert "zyxcanary" not in text
    with fresh_db.admin() as conn:
        dump = conn.execute("SELECT string_agg(t::text, ' ') FROM (SELECT to_jsonb(x) AS t FROM audit_log x UNION ALL"
                            " SELECT to_jsonb(p) FROM proposals p UNION ALL SELECT to_jsonb(l) FROM proposal_lines l"
                            " UNION ALL SELECT to_jsonb(m) FROM webhook_messages m) rows").fetchone()
    stored = (dump[0] if dump else "") or ""
    assert DROPPED not in stored and ANSWER not in stored  # only the checked draft is kept
