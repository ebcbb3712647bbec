"""`probes._records.to_floats`: one host transfer per device, values read as float32 whatever the mix."""

import pytest
import torch

from probes._records import to_floats


def test_mixed_dtypes_read_as_float32_each():
    """A count next to float16 norms on one device: joined without promoting the count to float16 (3001 is
    not a float16 number: it would read 3000)."""
    values = [torch.tensor(3001), torch.tensor([1.5, 2.25], dtype=torch.float16), 2,
              torch.tensor([1.0, 2.0], requires_grad=True) * 2, torch.tensor(True),
              torch.tensor(0.1, dtype=torch.float64)]
    got = to_floats(values)
    assert got[:7] == [3001.0, 1.5, 2.25, 2.0, 2.0, 4.0, 1.0]
    assert got[7] == float(torch.tensor(0.1).float())  # float64 read as float32, as before


def test_one_dtype_and_no_tensors():
    assert to_floats([torch.tensor([1.0, float("nan")]), torch.tensor(3.0)])[2] == 3.0
    assert to_floats([1, 2.5]) == [1.0, 2.5]
    assert to_floats([]) == []
    assert to_floats([torch.zeros(0), torch.tensor(1.0)]) == pytest.approx([1.0])
