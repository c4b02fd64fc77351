"""Shared by the simulator's tests."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Many small ops per step: on a small shared machine an OpenMP pool that loses its cores to other
    processes stalls (10x slower steps measured on 2 busy cores); one thread is robust."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
