#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (the device tool's `run`, from the repository root): nothing is
# fetched there, so lstmgen runs from the tree (PYTHONPATH), with the machine's own numba-cuda and torch.
#   1. the CUDA tests on the real GPU (tests/test_cuda.py compares every built-in with its CPU module;
#      tests/test_torch_cuda.py runs TorchRecurrent on CUDA tensors);
#   2. compute-sanitizer (memcheck, racecheck) on one small forward and backward;
#   3. benchmarks/gpu.py, TF32 off, then on; JSON to $OUT.
# Each step's log goes to $OUT; a failing step does not stop the next.
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export LSTMGEN_COMPILE_AHEAD=0
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import numba, torch; from numba import cuda; print(numba.__version__, torch.__version__, cuda.gpus)" \
  > "$OUT/versions.txt" 2>&1
timeout 240 python -m pytest -q tests/test_cuda.py tests/test_torch_cuda.py -p no:cacheprovider > "$OUT/test_cuda.log" 2>&1
small='import numpy as np, lstmgen; m = lstmgen.load("layernorm_lstm", target="cuda")
p = m.init_params(8, 64, dtype=np.float32, seed=0); x = np.ones((5, 4, 8), np.float32)
y, s, t = m.forward(x, p, lengths=np.array([5, 3, 1, 0]), reverse=True); m.backward(np.ones_like(y), t)'
for tool in memcheck racecheck; do
  timeout 120 compute-sanitizer --tool "$tool" python -c "$small" > "$OUT/sanitizer-$tool.log" 2>&1
done
timeout 300 python benchmarks/gpu.py --no-compile --repeats 5 --json "$OUT/gpu-fp32.json" > "$OUT/gpu.log" 2>&1
timeout 120 python benchmarks/gpu.py --no-compile --repeats 5 --tf32 --cells lstm,gru --json "$OUT/gpu-tf32.json" \
  >> "$OUT/gpu.log" 2>&1
echo done
