import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, so a failure can be reproduced."""
    torch.manual_seed(0)
    np.random.seed(0)
