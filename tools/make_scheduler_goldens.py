#!/usr/bin/env python3
"""Goldens for the flow-matching samplers, produced by diffusers' schedulers.

Three samplers:
  unipc          UniPCMultistepScheduler configured as the Wan2.1 diffusers pipeline ships it
                 (flow_prediction, use_flow_sigmas, flow_shift, solver_order 2, predict_x0,
                 bh2, lower_order_final, final sigma 0)
  euler          FlowMatchEulerDiscreteScheduler(shift=...) with its own default schedule
  euler_wansigmas  the same Euler scheduler given the UniPC schedule's unshifted sigmas,
                 linspace(1, 1/1000, steps + 1)[:-1], so its sigmas follow the Wan schedule

For each sampler it saves, for shifts 3.0 and 5.0 and steps 1, 2, 5 and 50, the sigmas
([steps + 1], the last one 0) and the timesteps ([steps]) that the model is given.

Then it runs complete sampling loops (steps 1, 2, 6 and 50, shift 3.0) on a fixed random sample of
shape [16, 5] with a fake model whose output at step k is

    model_output_k = 0.3 * sample_k + 0.1 * (k + 1) * noise

(`noise` a fixed random [16, 5] tensor), and saves every sample along the way and the model
outputs, so a port can either recompute the fake model or replay the stored outputs.

All tensors are float32 (UniPC's int64 timesteps are stored as exact float32 integers).
Run from the repository root:  python tools/make_scheduler_goldens.py
"""

import json
import shutil

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from golden_utils import GOLDENS, check_roundtrip, save_json, save_tensors, setup_torch, versions

OUT_DIR = GOLDENS / "scheduler"
SEED = 2104
SHAPE = (16, 5)
SCHEDULE_STEPS = (1, 2, 5, 50)
SCHEDULE_SHIFTS = (3.0, 5.0)
LOOP_STEPS = (1, 2, 6, 50)
LOOP_SHIFT = 3.0


def unipc(shift):
    # The scheduler_config.json of the Wan2.1 T2V diffusers checkpoints, with flow_shift varied.
    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        solver_order=2,
        prediction_type="flow_prediction",
        thresholding=False,
        predict_x0=True,
        solver_type="bh2",
        lower_order_final=True,
        disable_corrector=[],
        use_flow_sigmas=True,
        flow_shift=shift,
        timestep_spacing="linspace",
        steps_offset=0,
        final_sigmas_type="zero",
    )


def euler(shift):
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def set_steps(name, sched, steps):
    if name == "euler_wansigmas":
        base = np.linspace(1.0, 1.0 / 1000, steps + 1)[:-1]
        sched.set_timesteps(sigmas=base.tolist())
    else:
        sched.set_timesteps(steps)
    return sched


SAMPLERS = {
    "unipc": unipc,
    "euler": euler,
    "euler_wansigmas": euler,
}


def public_config(sched):
    """The scheduler's config without diffusers' bookkeeping entries (those start with '_')."""
    return {k: v for k, v in sched.config.items() if not k.startswith("_")}


def fake_model(sample, k, noise):
    return 0.3 * sample + 0.1 * (k + 1) * noise


def run_loop(name, steps, x0, noise):
    sched = set_steps(name, SAMPLERS[name](LOOP_SHIFT), steps)
    sample = x0[None].clone()  # diffusers' UniPC needs a batch dimension
    samples = [sample[0].clone()]
    outputs, orders, corrected, x0_preds = [], [], [], []
    for k, t in enumerate(sched.timesteps):
        out = fake_model(sample, k, noise[None])
        outputs.append(out[0].clone())
        sample = sched.step(out, t, sample, return_dict=False)[0]
        samples.append(sample[0].clone())
        if name == "unipc":
            orders.append(float(sched.this_order))
            # last_sample: the input of this step after the corrector (UniC) was applied to it;
            # model_outputs[-1]: this step's model output converted to an x0 prediction.
            corrected.append(sched.last_sample[0].clone())
            x0_preds.append(sched.model_outputs[-1][0].clone())
    rec = {
        "sigmas": sched.sigmas.float(),
        "timesteps": sched.timesteps.float(),
        "samples": torch.stack(samples),
        "model_outputs": torch.stack(outputs),
    }
    if name == "unipc":
        rec["order"] = torch.tensor(orders)
        rec["corrected"] = torch.stack(corrected)
        rec["x0_pred"] = torch.stack(x0_preds)
    return rec


def main():
    setup_torch()
    print("versions:", json.dumps(versions()))
    shutil.rmtree(OUT_DIR, ignore_errors=True)

    # 1. Schedules
    schedules = {}
    for name, make in SAMPLERS.items():
        for shift in SCHEDULE_SHIFTS:
            for steps in SCHEDULE_STEPS:
                sched = set_steps(name, make(shift), steps)
                key = f"{name}_shift{shift:g}_steps{steps}"
                schedules[f"{key}_sigmas"] = sched.sigmas.float()
                schedules[f"{key}_timesteps"] = sched.timesteps.float()
                assert sched.sigmas.shape == (steps + 1,) and sched.timesteps.shape == (steps,)
    print("\n=== schedules ===")
    written = save_tensors(OUT_DIR / "schedules.safetensors", schedules,
                           metadata={"generator": "tools/make_scheduler_goldens.py"})
    check_roundtrip(OUT_DIR / "schedules.safetensors", written)
    for name in SAMPLERS:
        print(f"  {name} shift 3 steps 5: sigmas {schedules[f'{name}_shift3_steps5_sigmas'].tolist()}")
        print(f"  {name} shift 3 steps 5: timesteps {schedules[f'{name}_shift3_steps5_timesteps'].tolist()}")

    # 2. Sampling loops
    gen = torch.Generator().manual_seed(SEED)
    x0 = torch.randn(SHAPE, generator=gen)
    noise = torch.randn(SHAPE, generator=gen)
    loops = {"initial_sample": x0, "noise": noise}
    for name in SAMPLERS:
        for steps in LOOP_STEPS:
            rec = run_loop(name, steps, x0, noise)
            for k, v in rec.items():
                loops[f"{name}_loop{steps}_{k}"] = v
    print("\n=== sampling loops ===")
    written = save_tensors(OUT_DIR / "loops.safetensors", loops,
                           metadata={"generator": "tools/make_scheduler_goldens.py"})
    check_roundtrip(OUT_DIR / "loops.safetensors", written)
    print(f"  unipc loop 6 orders: {loops['unipc_loop6_order'].tolist()}")

    save_json(
        OUT_DIR / "goldens.json",
        {
            "versions": versions(),
            "unipc_config": public_config(unipc(3.0)),
            "euler_config": public_config(euler(3.0)),
            "schedule_steps": list(SCHEDULE_STEPS),
            "schedule_shifts": list(SCHEDULE_SHIFTS),
            "loop_steps": list(LOOP_STEPS),
            "loop_shift": LOOP_SHIFT,
            "fake_model": "model_output_k = 0.3 * sample_k + 0.1 * (k + 1) * noise",
            "sample_shape": list(SHAPE),
            "seed": SEED,
        },
    )


if __name__ == "__main__":
    main()
