import a6fast

import no_such_module_for_a6fast_tests  # noqa: F401
