"""Helpers for driving the API over HTTP the way a frontend would."""

from __future__ import annotations

from typing import Any

import httpx

from api.auth import mint_token
from domain.metadata import Role
from tests.conftest import TEST_SECRET


def token_for(role: Role, subject: str | None = None, scopes: tuple[str, ...] = ()) -> str:
    return mint_token(TEST_SECRET, role, subject, scopes=scopes)


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    expect_status: int = 200,
) -> dict[str, Any]:
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=all_headers
    )
    assert response.status_code == expect_status, response.text
    body: dict[str, Any] = response.json()
    return body


def data(body: dict[str, Any]) -> dict[str, Any]:
    assert not body.get("errors"), body.get("errors")
    result: dict[str, Any] = body["data"]
    return result


REGISTER = """
mutation Register($input: RegisterMemberInput!) {
  registerMember(input: $input) {
    token position
    member { id memberId name email city status tier erased version }
    userErrors { field message code }
  }
}
"""


async def register(
    client: httpx.AsyncClient, name: str = "Ann Lee", email: str = "ann@example.com", **fields: Any
) -> dict[str, Any]:
    body = await gql(client, REGISTER, {"input": {"name": name, "email": email, **fields}})
    payload: dict[str, Any] = data(body)["registerMember"]
    assert payload["userErrors"] == [], payload["userErrors"]
    return payload


UPSERT_PRODUCT = """
mutation U($input: ProductInput!) {
  upsertProduct(input: $input) { position userErrors { field message code } }
}
"""
CATALOGUE_ADMIN = token_for(Role.ADMIN, "catalogue-admin")


async def list_product(client: httpx.AsyncClient, product_id: str, price: int, *,
                       name: str | None = None, currency: str = "CNY",
                       **fields: Any) -> dict[str, Any]:
    """List (or revise) a catalogue product as the shop's admin does."""
    body = await gql(client, UPSERT_PRODUCT, {"input": {
        "productId": product_id, "name": name or product_id, "price": price,
        "currency": currency, **fields}}, token=CATALOGUE_ADMIN)
    payload: dict[str, Any] = data(body)["upsertProduct"]
    assert payload["userErrors"] == [], payload["userErrors"]
    return payload


LISTED = """
query P($id: String!) {
  product(productId: $id) { name category brand releasedOn attributes consumable }
}
"""


async def order_lines(client: httpx.AsyncClient,
                      lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines as a member sends them (productId and quantity), after listing each priced
    line's product (`productId`, `unitPrice`, optional `name`, `category`, `brand`) in the
    catalogue at that price: the catalogue, not the client, prices an order. A product
    listed already keeps its name and what the line does not say (category, brand, release
    date, attributes, consumable): the line only sets its price."""
    sent = []
    for line in lines:
        listed = data(await gql(client, LISTED, {"id": line["productId"]}))["product"] or {}
        await list_product(client, line["productId"], line["unitPrice"], **{
            **listed, "name": listed.get("name") or line.get("name"),
            "category": line.get("category") or listed.get("category"),
            "brand": line.get("brand") or listed.get("brand")})
        sent.append({"productId": line["productId"], "quantity": line["quantity"]})
    return sent
