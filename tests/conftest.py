import pytest

from tiny_repo import make_tiny_repo


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory):
    """The whole pipeline reproduced on a tiny phantom in a temporary git + DVC repository, committed."""
    return make_tiny_repo(tmp_path_factory.mktemp("pipeline"))
