from __future__ import annotations

import httpx

from tests.graphql import data, gql, register


async def test_register_and_read_back_own_profile(client: httpx.AsyncClient) -> None:
    payload = await register(client, city="Hangzhou")
    assert payload["member"]["name"] == "Ann Lee"
    assert payload["position"] >= 1
    me = data(await gql(client, "{ me { name email city } }", token=payload["token"]))
    assert me["me"] == {"name": "Ann Lee", "email": "ann@example.com", "city": "Hangzhou"}
