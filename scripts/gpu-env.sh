# Source this on the GPU machine (device tool) from the repository root:
# installs the carried wheels (.whl/) and newcompute + its plugins, offline.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 1
for p in plugins/*/ examples/*/; do
  [ -f "$p/pyproject.toml" ] && { python3 -m pip install -q --no-index --no-deps --no-build-isolation -e "$p" || return 1; }
done
export PYTHONUNBUFFERED=1
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
