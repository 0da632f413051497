// Balloon-Windkessel haemodynamics (dtb/sim/bold.py) in C++, for integrating a whole window.
//
// The same separately rounded float64 operations in the same order as dtb.sim.bold.balloon_step
// and bold_signal (pow and exp from lif_common.h, the C++ copies of dtb.fpmath), so a window
// integrated here gives the bits of the step-by-step Python reference on every machine.  Build
// with -ffp-contract=off and without -ffast-math.
#pragma once

#include "lif_common.h"

namespace dtb {

// Constants of one parameter set (times in s); inv_alpha = 1 / alpha and log_retained =
// fpmath.log(1 - E_0) are computed once by the caller, as dtb.sim.bold does.
struct BalloonConst {
  double eps, tau_s, tau_f, tau_0, inv_alpha, E_0, V_0, dt, u_floor, log_retained;
};

// max(x, floor) as numpy.maximum / torch.clamp(min=) give it for ordered values (NaN stays NaN).
DTB_HD double at_least(double x, double floor) { return x < floor ? floor : x; }

// One forward-Euler step of dt with input fraction u (dtb.sim.bold.balloon_step).
DTB_HD void balloon_step_f64(double& s, double& f, double& v, double& q, double u, const BalloonConst& p) {
  u = at_least(u, p.u_floor);
  const double v_pow = pow_f64(v, p.inv_alpha);
  const double extraction = (1.0 - exp_f64(p.log_retained / f)) / p.E_0;
  const double f_new = at_least(f + p.dt * s, p.u_floor);
  const double v_new = at_least(v + p.dt * (f - v_pow) / p.tau_0, p.u_floor);
  const double q_new = at_least(q + p.dt * (f * extraction - q * v_pow / v) / p.tau_0, p.u_floor);
  s = s + p.dt * (p.eps * u - s / p.tau_s - (f - 1.0) / p.tau_f);
  f = f_new;
  v = v_new;
  q = q_new;
}

// BOLD signal y of a state (dtb.sim.bold.bold_signal).
DTB_HD double bold_signal_f64(double q, double v, const BalloonConst& p) {
  const double a = 7.0 * p.E_0, b = 2.0 * p.E_0 - 0.2;
  return p.V_0 * (a * (1.0 - q) + 2.0 * (1.0 - q / v) + b * (1.0 - v));
}

}  // namespace dtb
