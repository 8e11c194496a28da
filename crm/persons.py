"""Find the people behind customer records: records sharing a normalised phone or email are one person."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Engine

from crm.db import in_chunks, write_tx
from crm.ledger.claims import rekey_persons
from crm.models import ContactKind, ContactPoint, ContactStatus, Customer

contacts_t = ContactPoint.__table__
customers_t = Customer.__table__
MATCH_KINDS = (ContactKind.email.value, ContactKind.phone.value)


@dataclass
class PersonGroup:
    """Several customer records that are one person, and the addresses that tie them."""

    customer_ids: list[int]
    external_ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return the group as JSON-ready data."""
        return {"external_ids": self.external_ids, "names": self.names, "shared": self.shared,
                "customer_ids": self.customer_ids}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        root = self.parent.setdefault(item, item)
        while root != self.parent[root]:
            root = self.parent[root]
        while item != root:
            item, self.parent[item] = self.parent[item], root
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def duplicate_groups(engine: Engine) -> list[PersonGroup]:
    """Return groups of customer records that share a normalised phone or email (usable addresses only)."""
    usable = contacts_t.c.status != ContactStatus.superseded.value
    shared = (
        select(contacts_t.c.kind, contacts_t.c.value)
        .where(contacts_t.c.kind.in_(MATCH_KINDS), usable)
        .group_by(contacts_t.c.kind, contacts_t.c.value)
        .having(func.count(func.distinct(contacts_t.c.customer_id)) > 1)
        .subquery()
    )
    query = (
        select(contacts_t.c.kind, contacts_t.c.value, contacts_t.c.customer_id)
        .join(shared, (shared.c.kind == contacts_t.c.kind) & (shared.c.value == contacts_t.c.value))
        .where(usable)
        .order_by(contacts_t.c.kind, contacts_t.c.value, contacts_t.c.customer_id)
    )
    groups = _UnionFind()
    addresses: dict[str, set[int]] = {}
    with engine.connect() as conn:
        for kind, value, customer_id in conn.execute(query):
            addresses.setdefault(f"{kind}:{value}", set()).add(customer_id)
        for members in addresses.values():
            first, *rest = sorted(members)
            for other in rest:
                groups.union(first, other)
        by_root: dict[int, PersonGroup] = {}
        for customer_id in sorted(groups.parent):
            root = groups.find(customer_id)
            by_root.setdefault(root, PersonGroup(customer_ids=[])).customer_ids.append(customer_id)
        all_ids = list(groups.parent)
        details = {}
        for chunk in in_chunks(all_ids):
            for row in conn.execute(select(customers_t.c.id, customers_t.c.external_id, customers_t.c.name)
                                    .where(customers_t.c.id.in_(chunk))):
                details[row.id] = row
    for address, members in sorted(addresses.items()):
        by_root[groups.find(min(members))].shared.append(address)
    result = []
    for group in sorted(by_root.values(), key=lambda g: g.customer_ids[0]):
        group.external_ids = [details[cid].external_id for cid in group.customer_ids]
        group.names = [details[cid].name for cid in group.customer_ids]
        result.append(group)
    return result


def refresh_persons(engine: Engine) -> int:
    """Set ``customers.person_id`` to the smallest customer id of each person; return the number of people.

    Records that change person take their locks with them (``crm.ledger.claims.rekey_persons``):
    a cooldown or a cap counted for one record still counts once it is known to be the same person.
    """
    groups = duplicate_groups(engine)
    target = {cid: group.customer_ids[0] for group in groups for cid in group.customer_ids}
    with write_tx(engine) as conn:
        current = {cid: person or cid for cid, person in conn.execute(
            select(customers_t.c.id, customers_t.c.person_id).where(
                customers_t.c.person_id.is_(None) | (customers_t.c.person_id != customers_t.c.id)))}
        moved = {cid: (current.get(cid, cid), new) for cid, new in target.items() if current.get(cid, cid) != new}
        moved.update({cid: (old, cid) for cid, old in current.items() if cid not in target})
        nulls = [cid for cid, person in current.items() if person == cid]  # person_id NULL: itself
        rows = [{"b_id": cid, "person": new} for cid, (_, new) in moved.items()]
        rows += [{"b_id": cid, "person": cid} for cid in nulls if cid not in moved]
        if rows:
            conn.execute(update(customers_t).where(customers_t.c.id == bindparam("b_id"))
                         .values(person_id=bindparam("person")), rows)
        rekey_persons(conn, moved)
        return conn.execute(select(func.count(customers_t.c.person_id.distinct()))).scalar_one()
