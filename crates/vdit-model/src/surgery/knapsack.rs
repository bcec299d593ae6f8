//! The multiple-choice knapsack of the block-rate planner: one option per layer, the least
//! summed error whose summed cost stays within a budget.
//!
//! Solved exactly by dynamic programming over integer cost units:
//! - when every cost is a whole number (FLOP counts are) and the budget holds at most
//!   [`MAX_CELLS`] multiples of their greatest common divisor, that divisor is the unit and the
//!   answer is the exact optimum;
//! - otherwise the unit is budget / [`MAX_CELLS`] and each cost is rounded *up* to whole units.
//!   The chosen options then never exceed the budget, and the answer is optimal among the
//!   choices that fit after rounding: at most `layers` units (`layers / MAX_CELLS` of the
//!   budget) of slack can be lost.

/// Budget cells of the dynamic program (its table is layers x cells).
pub const MAX_CELLS: u64 = 1 << 18;

/// One option of a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Item {
    pub cost: f64,
    pub error: f64,
}

/// The chosen option of every layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    /// Index into each layer's options.
    pub picks: Vec<usize>,
    pub cost: f64,
    pub error: f64,
    /// True when the costs were multiples of the unit (no rounding): the optimum is exact.
    pub exact: bool,
}

/// No choice fits the budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Infeasible {
    /// The cheapest choice's cost.
    pub min_cost: f64,
}

/// Picks one item per layer minimising the summed error with summed cost <= `budget`. Among
/// choices of equal error the cheaper one wins. Costs must be finite and >= 0, every layer must
/// have at least one item (the caller validates its input).
pub fn solve(layers: &[Vec<Item>], budget: f64) -> Result<Solution, Infeasible> {
    let min_cost: f64 = layers
        .iter()
        .map(|l| l.iter().map(|i| i.cost).fold(f64::INFINITY, f64::min))
        .sum();
    let infeasible = Infeasible { min_cost };
    if budget.is_nan() || budget < 0.0 || min_cost > budget {
        return Err(infeasible);
    }
    let (units, cells, exact) = discretise(layers, budget);
    let cells = cells as usize;

    // best[b]: least error of the layers so far with exactly b units; pick[l][b]: the option of
    // layer l on that best path.
    let mut best = vec![f64::INFINITY; cells + 1];
    best[0] = 0.0;
    let mut pick = vec![vec![u16::MAX; cells + 1]; layers.len()];
    for (l, items) in layers.iter().enumerate() {
        let mut next = vec![f64::INFINITY; cells + 1];
        for (b, &so_far) in best.iter().enumerate() {
            if so_far.is_infinite() {
                continue;
            }
            for (o, item) in items.iter().enumerate() {
                let nb = b as u64 + units[l][o];
                if nb > cells as u64 {
                    continue;
                }
                let e = so_far + item.error;
                if e < next[nb as usize] {
                    next[nb as usize] = e;
                    pick[l][nb as usize] = o as u16;
                }
            }
        }
        best = next;
    }
    // The least error, and the fewest units among equals.
    let mut end = None;
    for (b, &e) in best.iter().enumerate() {
        if e.is_finite() && end.is_none_or(|(_, be)| e < be) {
            end = Some((b, e));
        }
    }
    let (mut b, _) = end.ok_or(infeasible)?;
    let mut picks = vec![0; layers.len()];
    for l in (0..layers.len()).rev() {
        let o = pick[l][b] as usize;
        picks[l] = o;
        b -= units[l][o] as usize;
    }
    let cost = picks.iter().zip(layers).map(|(&o, l)| l[o].cost).sum();
    let error = picks.iter().zip(layers).map(|(&o, l)| l[o].error).sum();
    Ok(Solution {
        picks,
        cost,
        error,
        exact,
    })
}

/// Each item's cost in whole units, the budget in units, and whether no rounding happened.
fn discretise(layers: &[Vec<Item>], budget: f64) -> (Vec<Vec<u64>>, u64, bool) {
    const WHOLE: f64 = (1u64 << 53) as f64; // integers above are not exact in f64
    let whole = layers
        .iter()
        .flatten()
        .all(|i| i.cost.fract() == 0.0 && i.cost < WHOLE);
    if whole {
        let g = layers
            .iter()
            .flatten()
            .fold(0u64, |g, i| gcd(g, i.cost as u64))
            .max(1);
        let cells = (budget / g as f64).floor();
        if cells <= MAX_CELLS as f64 {
            let units = layers
                .iter()
                .map(|l| l.iter().map(|i| i.cost as u64 / g).collect())
                .collect();
            return (units, cells as u64, true);
        }
    }
    let unit = budget / MAX_CELLS as f64;
    let mut cells = MAX_CELLS;
    while cells > 0 && cells as f64 * unit > budget {
        cells -= 1; // floating point: cells units must not exceed the budget
    }
    let units = layers
        .iter()
        .map(|l| {
            l.iter()
                .map(|i| {
                    let mut u = (i.cost / unit).ceil().min(u64::MAX as f64) as u64;
                    while (u as f64) * unit < i.cost {
                        u += 1;
                    }
                    u
                })
                .collect()
        })
        .collect();
    (units, cells, false)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdit_wgpu::testing::{seed, Rng};

    /// Every combination: (least error, its cost) of those within the budget.
    fn brute_force(layers: &[Vec<Item>], budget: f64) -> Option<(f64, f64)> {
        let mut best: Option<(f64, f64)> = None;
        let mut idx = vec![0usize; layers.len()];
        loop {
            let cost: f64 = idx.iter().zip(layers).map(|(&o, l)| l[o].cost).sum();
            let error: f64 = idx.iter().zip(layers).map(|(&o, l)| l[o].error).sum();
            if cost <= budget && best.is_none_or(|(be, _)| error < be) {
                best = Some((error, cost));
            }
            let mut l = 0;
            loop {
                if l == layers.len() {
                    return best;
                }
                idx[l] += 1;
                if idx[l] < layers[l].len() {
                    break;
                }
                idx[l] = 0;
                l += 1;
            }
        }
    }

    fn random_instance(rng: &mut Rng, whole: bool) -> (Vec<Vec<Item>>, f64) {
        let n = 1 + (rng.next_u64() % 5) as usize;
        let layers: Vec<Vec<Item>> = (0..n)
            .map(|_| {
                let k = 1 + (rng.next_u64() % 4) as usize;
                (0..k)
                    .map(|_| {
                        let cost = if whole {
                            (1 + rng.next_u64() % 40) as f64 * 1e9
                        } else {
                            (rng.uniform() as f64 + 1.0) * 7.3
                        };
                        // Coarse errors so that ties happen.
                        let error = (rng.next_u64() % 8) as f64 * 0.125;
                        Item { cost, error }
                    })
                    .collect()
            })
            .collect();
        let total_max: f64 = layers
            .iter()
            .map(|l| l.iter().map(|i| i.cost).fold(0.0, f64::max))
            .sum();
        let budget = (rng.uniform() as f64 + 1.0) * 0.6 * total_max;
        (layers, budget)
    }

    #[test]
    fn whole_costs_match_brute_force() {
        let s = seed();
        let mut rng = Rng::new(s);
        let (mut feasible, mut infeasible) = (0, 0);
        for case in 0..2000 {
            let (layers, budget) = random_instance(&mut rng, true);
            let want = brute_force(&layers, budget);
            match (solve(&layers, budget), want) {
                (Ok(got), Some((error, _))) => {
                    feasible += 1;
                    assert!(got.exact, "seed {s} case {case}: whole costs must be exact");
                    assert!(got.cost <= budget, "seed {s} case {case}: over budget");
                    assert!(
                        (got.error - error).abs() < 1e-9,
                        "seed {s} case {case}: error {} vs brute force {error}\n{layers:?} budget {budget}",
                        got.error
                    );
                    let picked: f64 = got
                        .picks
                        .iter()
                        .zip(&layers)
                        .map(|(&o, l)| l[o].error)
                        .sum();
                    assert!((picked - got.error).abs() < 1e-12, "seed {s} case {case}");
                }
                (Err(e), None) => {
                    infeasible += 1;
                    assert!(e.min_cost > budget, "seed {s} case {case}");
                }
                (got, want) => panic!("seed {s} case {case}: {got:?} vs brute force {want:?}"),
            }
        }
        // Both outcomes must have been exercised for the comparison to mean anything.
        assert!(
            feasible > 100 && infeasible > 10,
            "{feasible} / {infeasible}"
        );
    }

    #[test]
    fn rounded_costs_stay_within_budget_and_near_the_optimum() {
        let s = seed();
        let mut rng = Rng::new(s);
        for case in 0..400 {
            let (layers, budget) = random_instance(&mut rng, false);
            let Some((optimum, _)) = brute_force(&layers, budget) else {
                assert!(solve(&layers, budget).is_err(), "seed {s} case {case}");
                continue;
            };
            // The rounding loses at most one unit per layer of the budget.
            let slack = layers.len() as f64 * budget / MAX_CELLS as f64;
            let Ok(got) = solve(&layers, budget) else {
                assert!(
                    brute_force(&layers, budget - slack).is_none(),
                    "seed {s} case {case}: infeasible although a choice fits with slack"
                );
                continue;
            };
            assert!(got.cost <= budget, "seed {s} case {case}: over budget");
            assert!(
                got.error >= optimum - 1e-9,
                "seed {s} case {case}: below the optimum"
            );
            if let Some((tighter, _)) = brute_force(&layers, budget - slack) {
                assert!(
                    got.error <= tighter + 1e-9,
                    "seed {s} case {case}: {} worse than the optimum of the tightened budget {tighter}",
                    got.error
                );
            }
        }
    }

    #[test]
    fn equal_errors_take_the_cheaper_choice_and_gcd_units_are_exact() {
        let layers = vec![
            vec![
                Item {
                    cost: 4e12,
                    error: 0.0,
                },
                Item {
                    cost: 2e12,
                    error: 0.0,
                },
            ],
            vec![
                Item {
                    cost: 4e12,
                    error: 0.0,
                },
                Item {
                    cost: 1e12,
                    error: 0.5,
                },
            ],
        ];
        let s = solve(&layers, 5e12).unwrap();
        assert_eq!(s.picks, vec![1, 1]);
        assert!(s.exact);
        let s = solve(&layers, 6e12).unwrap();
        assert_eq!((s.picks.clone(), s.error, s.cost), (vec![1, 0], 0.0, 6e12));
        let e = solve(&layers, 2.5e12).unwrap_err();
        assert_eq!(e.min_cost, 3e12);
    }
}
