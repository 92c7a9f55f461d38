"""The bitflip paradigm against newcompute's conformance suite, as any plugin author would run it."""

from newcompute.testing import ConformanceSpec, paradigm_conformance

import newcompute_bitflip.plugin as plugin

OFF = {"x_p_exp": 0.0, "x_p_frac": 0.0, "w_p_exp": 0.0, "w_p_frac": 0.0, "x_zero_out_t": 0.0, "w_zero_out_t": 0.0}

SPEC = ConformanceSpec(
    plugin=plugin,
    paradigm="bitflip",
    table={"x_p_exp": 2.0**-6, "x_p_frac": 2.0**-3, "w_p_exp": 2.0**-6, "w_p_frac": 2.0**-3},
    bad_tables=[
        {"x_p_exp": 1.0},
        {"w_p_frac": -0.1},
        {"x_p_frac": 1e-12},
        {"w_zero_out_t": -1.0},
        {"seed": 2**32},
        {"backend": "cuda"},
    ],
    identity_table=OFF,
    gpu=True,
)

TestBitflipConformance = paradigm_conformance(SPEC)
