"""Fixtures live in tests/fixtures/, one module per area; tests that need a server start it themselves."""

pytest_plugins = [
    "tests.fixtures.models",  # model repository with the real MiniLM export and a tiny CLIP
    "tests.fixtures.grpc_services",  # tokenizer and model server as real processes on loopback
    "tests.fixtures.stores",  # milvus-lite (embedded and server), SecantusDB
    "tests.fixtures.search",  # search service, Consul KV test double
    "tests.fixtures.stack",  # the whole local stack, for browser tests
    "tests.fixtures.spark",  # a standalone Spark master and worker on loopback
    "tests.fixtures.resilience",  # a stack whose parts can be killed and restarted, for the resilience suite
]
