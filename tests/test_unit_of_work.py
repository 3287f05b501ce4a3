"""The unit of work on both adapters: commit writes, leaving without commit or with an exception writes nothing."""

from __future__ import annotations

import uuid

import pytest

from ledger.container import Container
from ledger.domain.errors import Conflict, NotFound
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind


def test_committed_ledger_is_readable(any_container: Container) -> None:
    ledgers = any_container.ledger_service()
    ledger = ledgers.open_ledger(DEFAULT_TENANT_ID, name="Trust", currency="USD", time_zone="America/New_York")
    assert ledgers.get_ledger(DEFAULT_TENANT_ID, ledger.id) == ledger


def test_leaving_without_commit_writes_nothing(any_container: Container) -> None:
    ledger = any_container.ledger_service().open_ledger(DEFAULT_TENANT_ID, name="Trust", currency="EUR")
    account_id = uuid.uuid4()
    from dataclasses import replace

    template = any_container.account_service().open_account(
        DEFAULT_TENANT_ID, ledger.id, code="bank", name="Bank", kind=AccountKind.BANK
    )
    with any_container.unit_of_work() as uow:
        uow.accounts.add(replace(template, id=account_id, code="never-committed"))
        assert uow.accounts.get(DEFAULT_TENANT_ID, account_id) is not None
    with any_container.unit_of_work() as uow:
        assert uow.accounts.get(DEFAULT_TENANT_ID, account_id) is None


def test_exception_inside_unit_of_work_leaves_no_partial_write(any_container: Container) -> None:
    ledger = any_container.ledger_service().open_ledger(DEFAULT_TENANT_ID, name="Trust", currency="GBP")
    accounts = any_container.account_service()
    first = accounts.open_account(DEFAULT_TENANT_ID, ledger.id, code="c1", name="Client 1", kind=AccountKind.CLIENT)
    from dataclasses import replace

    new_id = uuid.uuid4()
    with pytest.raises(Conflict), any_container.unit_of_work() as uow:
        uow.accounts.add(replace(first, id=new_id, code="c2"))
        uow.accounts.add(replace(first, id=uuid.uuid4(), code="c1"))  # taken: the whole unit fails
        uow.commit()
    with pytest.raises(NotFound):
        accounts.get_account(DEFAULT_TENANT_ID, new_id)


def test_other_tenant_sees_nothing(any_container: Container) -> None:
    ledger = any_container.ledger_service().open_ledger(DEFAULT_TENANT_ID, name="Trust", currency="USD")
    with pytest.raises(NotFound):
        any_container.ledger_service().get_ledger(uuid.uuid4(), ledger.id)
