"""Peak memory: the host's peak resident set against allocations of known size (Linux's own accounting)."""

import sys

import numpy as np
import pytest

from effscale.training import memory

MIB = 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak can be reset on Linux only")
def test_the_host_peak_sees_an_allocation_and_starts_afresh_after_a_reset():
    assert memory.reset_host_peak()
    before = memory.host_peak_bytes()
    block = np.ones(256 * MIB, np.uint8)  # written: every page resident
    grown = memory.host_peak_bytes()
    assert grown >= before + 250 * MIB
    del block  # a block this large goes back to the OS at once (glibc maps it on its own)
    assert memory.host_peak_bytes() > grown - MIB  # a peak stays until reset (the counts are kept lazily: within pages)
    assert memory.reset_host_peak()
    assert memory.host_peak_bytes() < grown - 200 * MIB
