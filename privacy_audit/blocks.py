"""Work split into blocks, one block per thread, each thread with one intra-op thread.

Much of the audit is many small tensor operations (the registration's warps and correlations,
the copy encoder on a few hundred 64x64 images). Split across threads inside each operation,
they wait at a barrier per operation, and for a descheduled thread whenever another job shares
the cores; whole blocks per thread need no barrier.
"""

from __future__ import annotations

import torch


def map_blocks(work, starts, progress: bool, desc: str) -> list:
    """[work(start) for start in starts], in order, on torch.get_num_threads() threads, each
    running one block with one intra-op thread. Each block's result is what one thread computes,
    whatever the thread count. Grad mode is per thread: `work` sets its own."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    starts, before = list(starts), torch.get_num_threads()
    threads = min(before, len(starts))
    bar = tqdm(total=len(starts), desc=desc, disable=not progress)
    results = []
    if threads <= 1:
        for start in starts:
            results.append(work(start))
            bar.update()
        bar.close()
        return results
    torch.set_num_threads(1)  # what new threads start with
    try:
        with ThreadPoolExecutor(threads) as pool:
            for result in pool.map(work, starts):
                results.append(result)
                bar.update()
    finally:
        torch.set_num_threads(before)
        bar.close()
    return results
