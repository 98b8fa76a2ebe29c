import importlib.util
import os
import sys

# Scenario tests import the harness next to them.
sys.path.insert(0, os.path.dirname(__file__))


def _load_spec_from_source_tree() -> None:
    """spec/ installs as `raft_spec`; the tests import it as `spec`, from this source
    tree, without putting the tree on sys.path (its raft/ may lack the compiled core,
    which `pytest` takes from the installed package)."""
    if "spec" in sys.modules:
        return
    spec_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spec")
    found = importlib.util.spec_from_file_location(
        "spec", os.path.join(spec_dir, "__init__.py"), submodule_search_locations=[spec_dir])
    if found is None or found.loader is None:
        return
    module = importlib.util.module_from_spec(found)
    sys.modules["spec"] = module
    found.loader.exec_module(module)


_load_spec_from_source_tree()
