"""Fixtures over the local stack that `make stack-up` (deploy/stack.sh) starts.

Helpers (``wait_until``, addresses, topic creation) live in tests/stack.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from stack import Stack, StackAddresses, WebhookReceiver, create_topic, delete_topics, unique_name


@pytest.fixture(scope="session")
def stack() -> Stack:
    """Addresses of the stack; each component is checked when its address is first read."""
    return Stack(StackAddresses.from_env())


@pytest.fixture
def kafka_topic(stack: Stack) -> Iterator[Callable[..., str]]:
    """Factory ``kafka_topic(partitions=1) -> name`` of fresh topics, deleted after the test."""
    bootstrap = stack.kafka_bootstrap
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "test") -> str:
        name = unique_name(prefix)
        create_topic(bootstrap, name, partitions)
        created.append(name)
        return name

    yield make
    delete_topics(bootstrap, created)


@pytest.fixture
def webhook(stack: Stack) -> WebhookReceiver:
    """The webhook receiver, emptied; ``webhook.wait_for(predicate, timeout)`` polls it."""
    receiver = WebhookReceiver(stack.webhook_url)
    receiver.clear()
    return receiver
