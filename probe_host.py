import cProfile, pstats, sys, time, torch
from torch import nn
sys.path.insert(0, "benchmarks")
import mx as B
from newcompute_mx.linear import QuantizedLinear
from newcompute_mx.quantizers import MXQuantizer
from newcompute_mx import triton_kernels as tk
from newcompute_mx.formats import FORMATS

lin = nn.Linear(256, 256, bias=False, device="cuda", dtype=torch.bfloat16)
ours = QuantizedLinear(lin, MXQuantizer(B.MXFP8_ROLES, 32, "floor"))
x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
g = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
params = [x, lin.weight]
E4 = FORMATS["e4m3"]
xd = x.detach()
w = lin.weight.detach()

def host(fn, n=500):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    h = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return h

cases = {
    "bf16 fwd+bwd": lambda: torch.autograd.grad(lin(x), params, g),
    "ours fwd+bwd": lambda: torch.autograd.grad(ours(x), params, g),
    "bf16 fwd nograd": lambda: lin(xd),
    "ours fwd nograd": lambda: ours(xd),
    "mx_pairs two jobs": lambda: tk.mx_pairs([(xd, E4, E4), (w, E4, E4)], 32, False, torch.bfloat16),
    "mx_pair one job": lambda: tk.mx_pair(xd, E4, E4, 32, False, torch.bfloat16),
    "two torch.empty": lambda: (torch.empty((256, 256), dtype=torch.bfloat16, device="cuda"), torch.empty((256, 256), dtype=torch.bfloat16, device="cuda")),
    "matmul": lambda: torch.matmul(xd, w.t()),
}
for name, fn in cases.items():
    print(f"  {name}: {host(fn):.1f} us", flush=True)
pr = cProfile.Profile()
pr.enable()
for _ in range(500):
    torch.autograd.grad(ours(x), params, g)
pr.disable()
torch.cuda.synchronize()
pstats.Stats(pr).sort_stats("tottime").print_stats(30)
