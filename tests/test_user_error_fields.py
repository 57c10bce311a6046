"""A userError's `field` is the path into the mutation's `input` as the client wrote it.

Three layers: the path helpers (a bad path is rejected; domain paths are renamed and spelt
as the schema spells them), every input type's `domain_paths` (each points at a field the
input has), and a representative set of mutations driven with bad input, whose errors must
name exactly what the client wrote. Every other test's userErrors are checked as they
happen, by the `client` fixture's hook (tests/user_errors.py), which is tested here too.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from graphql import get_named_type

from api.schema import build_schema
from api.schema.input_paths import input_path_exists, to_client_message, to_input_path
from tests import user_errors
from tests.test_orders_api import AGENT, CANCEL_ORDER, REFUND_ORDER, mutate, shopper
from tests.test_shipments_api import ADDRESS, CREATE, paid
from tests.user_errors import bad_fields, graphql_schema, mutation_fields

# -- the path helpers -------------------------------------------------------------------------


@pytest.mark.parametrize(("mutation", "path"), [
    ("createShipment", "pickupPointId"),
    ("createShipment", "items"),
    ("createShipment", "items.0"),
    ("createShipment", "items.0.quantity"),
    ("createShipment", "items.12.lineId"),
    ("createShipment", "packaging.printedName"),
    ("resolveCase", "shipment"),
    ("resolveCase", "shipment.trackingNumber"),
    ("openAfterSalesCase", "onBehalfReason"),
    ("refundOrder", "lines.0.lineId"),
])
def test_a_path_into_the_input_is_accepted(mutation: str, path: str) -> None:
    assert input_path_exists(graphql_schema(), mutation, path)


@pytest.mark.parametrize(("mutation", "path"), [
    ("createShipment", "pickupPoint"),            # the domain's name, not the input's
    ("createShipment", "pickup_point_id"),        # snake_case
    ("createShipment", "quantity"),               # a list item's field without the item
    ("createShipment", "items.quantity"),         # … or without its index
    ("createShipment", "items.x.quantity"),       # an index is a number
    ("createShipment", "orderId.0"),              # an index on what is no list
    ("createShipment", "carrier.name"),           # a field of a scalar
    ("createShipment", "packaging.printed_name"),
    ("createShipment", "input.carrier"),          # relative to `input`, not including it
    ("createShipment", ""),
    ("resolveCase", "trackingNumber"),            # it is the shipment's
    ("openAfterSalesCase", "lines.0.line_id"),
    ("noSuchMutation", "reason"),
])
def test_a_bad_path_is_rejected(mutation: str, path: str) -> None:
    assert not input_path_exists(graphql_schema(), mutation, path)


def test_a_domain_path_is_renamed_and_spelt_as_the_schema_spells_it() -> None:
    assert to_input_path("packaging.printed_name") == "packaging.printedName"
    assert to_input_path("lines.0.line_id") == "lines.0.lineId"
    assert to_input_path("pickup_point", {"pickup_point": "pickup_point_id"}) == "pickupPointId"
    # The longest declared leading part wins; the rest keeps its own names.
    renames = {"lines": "items", "lines.0": "first"}
    assert to_input_path("lines.1.quantity", renames) == "items.1.quantity"
    assert to_input_path("lines.0.quantity", renames) == "first.quantity"
    # Staff's reason is the command's metadata: `reason` unless the input says otherwise.
    assert to_input_path("meta.reason") == "reason"
    assert to_input_path("meta.reason", {"meta.reason": "note"}) == "note"
    # The schema's own converter, whatever it is.
    assert to_input_path("printed_name", convert=str.upper) == "PRINTED_NAME"


def test_a_message_names_the_field_as_the_client_wrote_it() -> None:
    assert (to_client_message("packaging.printed_name must be at most 60 characters",
                              "packaging.printed_name")
            == "packaging.printedName must be at most 60 characters")
    assert (to_client_message("events[1] (viewed) needs a product_id", "events.1.product_id")
            == "events[1] (viewed) needs a productId")
    # Plain words and echoed values are left as they are.
    assert to_client_message("choose a pickup point", "pickup_point",
                             {"pickup_point": "pickup_point_id"}) == "choose a pickup point"
    assert (to_client_message("unknown product 'gift_card'", "product_id")
            == "unknown product 'gift_card'")


def _input_classes() -> list[tuple[str, Any]]:
    """(mutation, the Python class of its `input`) for every mutation of the schema."""
    schema = build_schema()
    mutations = graphql_schema().mutation_type
    assert mutations is not None
    classes = []
    for name, field in mutations.fields.items():
        input_type = get_named_type(field.args["input"].type)
        definition = schema.get_type_by_name(input_type.name)
        classes.append((name, definition.origin))  # type: ignore[union-attr]
    return classes


def test_every_declared_domain_path_points_at_a_field_of_its_input() -> None:
    declared = [(name, cls) for name, cls in _input_classes() if getattr(cls, "domain_paths", None)]
    assert len(declared) >= 6  # pickup points, reasons under other names, a reward's cost
    for name, cls in declared:
        for domain, target in cls.domain_paths.items():
            path = to_input_path(domain, cls.domain_paths)
            assert input_path_exists(graphql_schema(), name, path), (name, domain, target)


# -- the suite-wide recorder ------------------------------------------------------------------


def test_the_recorder_refuses_a_field_that_is_no_input_path() -> None:
    query = ("mutation M($i: CreateShipmentInput!) { parcel: createShipment(input: $i) "
             "{ userErrors { field } } }")
    assert mutation_fields(query) == {"parcel": "createShipment"}
    good = {"data": {"parcel": {"userErrors": [{"field": "items.0.quantity"}]}}}
    assert bad_fields(query, good) == []
    for wrong in ("quantity", "pickupPoint", "shipment", "items.0.line_id"):
        body = {"data": {"parcel": {"userErrors": [{"field": wrong, "code": "VALIDATION"}]}}}
        (problem,) = bad_fields(query, body)
        assert repr(wrong) in problem and "createShipment" in problem
    # Queries carry no userErrors to check; a field of null is "no field".
    assert bad_fields("{ me { id } }", {"data": {"me": None}}) == []
    assert bad_fields(query, {"data": {"parcel": {"userErrors": [{"field": None}]}}}) == []
    assert ("createShipment", "pickupPoint") in user_errors.OBSERVED


# -- mutations driven with bad input ----------------------------------------------------------


def _only_error(payload: dict[str, Any]) -> dict[str, Any]:
    assert payload["position"] is None and len(payload["userErrors"]) == 1, payload
    error: dict[str, Any] = payload["userErrors"][0]
    return error


async def test_mutations_name_the_input_path_the_client_wrote(
    client: httpx.AsyncClient,
) -> None:
    ann = await shopper(client, "Ann Lee")
    order = await paid(client, ann)  # two tents (L1) and a mug (L2)
    parcel = {"orderId": order["id"], "method": "HOME_DELIVERY", "address": ADDRESS,
              "carrier": "SF", "trackingNumber": f"SF{uuid.uuid4().hex[:8]}"}
    seen: list[tuple[str, str, dict[str, Any]]] = []

    async def refused(mutation: str, document: str, fields: dict[str, Any],
                      token: str = AGENT) -> dict[str, Any]:
        error = _only_error(await mutate(client, document, fields, token))
        seen.append((mutation, error["field"], error))
        return error

    # A pickup point is chosen by its id.
    error = await refused("createShipment", CREATE, {**parcel, "method": "PICKUP_POINT"})
    assert error["field"] == "pickupPointId"
    # An item of a list is named by its index.
    error = await refused("createShipment", CREATE, {
        **parcel, "items": [{"lineId": "L1", "quantity": 0}]})
    assert error["field"] == "items.0.quantity"
    error = await refused("createShipment", CREATE, {
        **parcel, "items": [{"lineId": "L2", "quantity": 1}, {"lineId": "L1", "quantity": 5}]})
    assert error["field"] == "items.1.quantity"
    # A nested field, in the message too.
    error = await refused("createShipment", CREATE, {
        **parcel, "packaging": {"printedName": "x" * 61}})
    assert error["field"] == "packaging.printedName"
    assert "packaging.printedName" in error["message"]
    assert "printed_name" not in error["message"]
    error = await refused("refundOrder", REFUND_ORDER, {
        "orderId": order["id"], "lines": [{"lineId": "L1", "quantity": 1},
                                          {"lineId": "L9", "quantity": 1}],
        "idempotencyKey": "refund-1", "reason": "damaged"})
    assert (error["code"], error["field"]) == ("NOT_FOUND", "lines.1.lineId")
    # Staff's reason under the name each input gives it.
    error = await refused("cancelOrder", CANCEL_ORDER, {"orderId": order["id"],
                                                        "reason": "STAFF"})
    assert (error["code"], error["field"]) == ("REASON_REQUIRED", "note")
    open_case = ("mutation M($input: OpenAfterSalesCaseInput!) { openAfterSalesCase("
                 "input: $input) { position userErrors { field message code } } }")
    error = await refused("openAfterSalesCase", open_case, {
        "orderId": order["id"], "type": "RETURN", "reason": "defective",
        "lines": [{"lineId": "L1", "quantity": 1}], "idempotencyKey": "case-1"})
    assert (error["code"], error["field"]) == ("REASON_REQUIRED", "onBehalfReason")

    for mutation, field, error in seen:
        assert input_path_exists(graphql_schema(), mutation, field), (mutation, error)
