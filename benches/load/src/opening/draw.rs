//! Was the opening's draw uniform? A uniformly random order of the pre-queue makes a buyer's
//! drawn place independent of when it arrived, so the run tests that independence over every
//! buyer it saw, at significance 0.001, two ways; both must pass:
//!
//! - **Chi-square test of independence** on a k × k table: arrival ranks cut into k groups of
//!   (nearly) equal size, drawn places likewise, each buyer counted in the cell of its two
//!   groups; (k − 1)² degrees of freedom. k is 10 (deciles), fewer when the run has too few
//!   buyers for 5 expected in every cell. The critical value is the Wilson–Hilferty
//!   approximation of the chi-square quantile (see `chi_square_critical`).
//! - **Spearman's rank correlation** between arrival and drawn place: under independence rho is
//!   about normal with standard deviation 1/sqrt(n − 1), so |rho| must be within
//!   3.29/sqrt(n − 1) (two-sided 0.001).
//!
//! Ties (two buyers with the same drawn place, which the place's reconstruction can give) take
//! their mean rank in rho and are broken by a seeded hash for the groups.

use serde::Serialize;

pub const SIGNIFICANCE: f64 = 0.001;
/// The standard normal quantile of 1 − SIGNIFICANCE: the chi-square test looks at one tail.
const Z_ONE_SIDED: f64 = 3.0902;
/// The standard normal quantile of 1 − SIGNIFICANCE / 2: rho may lean either way.
const Z_TWO_SIDED: f64 = 3.2905;
/// Deciles.
const GROUPS_MAX: usize = 10;
/// The chi-square approximation wants at least this many expected in every cell.
const EXPECTED_PER_CELL_MIN: usize = 5;
/// The fewest buyers the tests are made on: a 2 × 2 table of 5 expected a cell.
pub const BUYERS_MIN: usize = 4 * EXPECTED_PER_CELL_MIN;

#[derive(Debug, Clone, Serialize)]
pub struct Uniformity {
    /// Buyers with both an arrival and a drawn place.
    pub buyers: usize,
    /// k: groups of arrival and of drawn place.
    pub groups: usize,
    pub chi_square: f64,
    pub degrees_of_freedom: usize,
    pub chi_square_critical: f64,
    pub chi_square_pass: bool,
    pub spearman_rho: f64,
    /// 3.29/sqrt(n − 1).
    pub spearman_bound: f64,
    pub spearman_pass: bool,
    pub significance: f64,
    pub pass: bool,
}

impl Uniformity {
    /// Tests `arrival[i]` against `place[i]` (any numbers that order the buyers; ties
    /// allowed); `None` with fewer than `BUYERS_MIN` buyers.
    pub fn test(arrival: &[f64], place: &[f64], seed: u64) -> Option<Self> {
        assert_eq!(arrival.len(), place.len(), "one place per arrival");
        let n = arrival.len();
        let groups = groups_for(n)?;
        let arrival_groups = grouped(arrival, groups, seed);
        let place_groups = grouped(place, groups, seed.rotate_left(32) ^ 0x5bd1_e995);
        let chi_square = chi_square_independence(&arrival_groups, &place_groups, groups);
        let degrees_of_freedom = (groups - 1) * (groups - 1);
        let chi_square_critical = chi_square_critical(degrees_of_freedom);
        let spearman_rho = spearman(arrival, place);
        let spearman_bound = Z_TWO_SIDED / ((n - 1) as f64).sqrt();
        let chi_square_pass = chi_square <= chi_square_critical;
        let spearman_pass = spearman_rho.abs() <= spearman_bound;
        Some(Self {
            buyers: n,
            groups,
            chi_square,
            degrees_of_freedom,
            chi_square_critical,
            chi_square_pass,
            spearman_rho,
            spearman_bound,
            spearman_pass,
            significance: SIGNIFICANCE,
            pass: chi_square_pass && spearman_pass,
        })
    }
}

/// The most groups, up to 10, that leave at least 5 expected in every cell of the table.
fn groups_for(n: usize) -> Option<usize> {
    let groups = (2..=GROUPS_MAX)
        .rev()
        .find(|k| n >= EXPECTED_PER_CELL_MIN * k * k)?;
    Some(groups)
}

/// The chi-square quantile of 1 − SIGNIFICANCE for `df` degrees of freedom, by the
/// Wilson–Hilferty approximation: (X/df)^(1/3) is about normal with mean 1 − 2/(9 df) and
/// variance 2/(9 df), so the quantile is df (1 − 2/(9 df) + z sqrt(2/(9 df)))³ with z = 3.0902,
/// the normal quantile of 0.999. Within 0.1% of the exact value from 49 degrees of freedom up
/// (126.14 against 126.08 for the 81 of a 10 × 10 table); 3% high at 1.
pub fn chi_square_critical(df: usize) -> f64 {
    let df = df as f64;
    let v = 2.0 / (9.0 * df);
    df * (1.0 - v + Z_ONE_SIDED * v.sqrt()).powi(3)
}

/// Pearson's chi-square of independence of two groupings of the same buyers, each into
/// `groups` groups: Σ (observed − expected)² / expected over the cells, expected from the
/// table's margins.
pub fn chi_square_independence(rows: &[usize], columns: &[usize], groups: usize) -> f64 {
    let n = rows.len();
    let mut table = vec![0u64; groups * groups];
    let mut row_totals = vec![0u64; groups];
    let mut column_totals = vec![0u64; groups];
    for (&r, &c) in rows.iter().zip(columns) {
        table[r * groups + c] += 1;
        row_totals[r] += 1;
        column_totals[c] += 1;
    }
    let mut chi_square = 0.0;
    for r in 0..groups {
        for c in 0..groups {
            let expected = (row_totals[r] * column_totals[c]) as f64 / n as f64;
            if expected > 0.0 {
                let off = table[r * groups + c] as f64 - expected;
                chi_square += off * off / expected;
            }
        }
    }
    chi_square
}

/// Spearman's rho: Pearson's correlation of the two rankings (mean ranks for ties).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (mean_ranks(a), mean_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

/// Ranks from 1, tied values sharing the mean of their ranks.
fn mean_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Ranks start + 1 ..= end share their mean.
        let mean = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = mean;
        }
        start = end;
    }
    ranks
}

/// Each value's group, 0..groups, by rank: the lowest n/groups values in group 0 and so on.
/// Ties are broken by a hash of the buyer's index and `seed`, not by the index itself, which
/// could line up with the other variable.
fn grouped(values: &[f64], groups: usize, seed: u64) -> Vec<usize> {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| {
        values[i]
            .total_cmp(&values[j])
            .then_with(|| mix(seed ^ i as u64).cmp(&mix(seed ^ j as u64)))
    });
    let mut group = vec![0; n];
    for (rank, &i) in order.iter().enumerate() {
        group[i] = rank * groups / n;
    }
    group
}

/// splitmix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    fn line(n: usize) -> Vec<f64> {
        (1..=n).map(|p| p as f64).collect()
    }

    #[test]
    fn a_uniformly_shuffled_line_passes_both_tests() {
        let arrival = line(100_000);
        let mut place = arrival.clone();
        place.shuffle(&mut StdRng::seed_from_u64(7));
        let test = Uniformity::test(&arrival, &place, 1).expect("enough buyers");
        assert_eq!((test.groups, test.degrees_of_freedom), (10, 81));
        assert!(test.chi_square_pass && test.spearman_pass, "{test:?}");
        assert!(test.pass);
        assert!(test.spearman_rho.abs() < test.spearman_bound, "{test:?}");
    }

    #[test]
    fn the_arrival_order_kept_fails_both_tests() {
        let arrival = line(100_000);
        let test = Uniformity::test(&arrival, &arrival, 1).expect("enough buyers");
        assert!(!test.chi_square_pass && !test.spearman_pass, "{test:?}");
        assert!(!test.pass);
        assert!((test.spearman_rho - 1.0).abs() < 1e-9);
        // Every buyer on the diagonal: n (k − 1).
        assert!((test.chi_square - 900_000.0).abs() < 1e-6, "{test:?}");
    }

    #[test]
    fn a_draw_that_only_favours_early_arrivals_a_little_is_caught() {
        // Each place drawn at random, but the first tenth of the arrivals moved 5% forward.
        let n = 100_000;
        let arrival = line(n);
        let mut place = arrival.clone();
        place.shuffle(&mut StdRng::seed_from_u64(11));
        for (a, p) in arrival.iter().zip(place.iter_mut()) {
            if *a <= (n / 10) as f64 {
                *p -= 0.05 * n as f64;
            }
        }
        let test = Uniformity::test(&arrival, &place, 1).expect("enough buyers");
        assert!(!test.pass, "{test:?}");
    }

    #[test]
    fn small_runs_use_fewer_groups_and_tiny_ones_are_not_tested() {
        assert_eq!(groups_for(500), Some(10));
        assert_eq!(groups_for(499), Some(9));
        assert_eq!(groups_for(BUYERS_MIN), Some(2));
        assert_eq!(groups_for(BUYERS_MIN - 1), None);
        assert!(Uniformity::test(&line(10), &line(10), 1).is_none());
    }

    #[test]
    fn wilson_hilferty_is_close_to_the_exact_quantiles() {
        // χ²(0.999) for 4, 49 and 81 degrees of freedom.
        for (df, exact) in [(4, 18.4668), (49, 85.3506), (81, 126.0826)] {
            let approx = chi_square_critical(df);
            assert!((approx - exact).abs() / exact < 0.015, "{df}: {approx}");
        }
    }

    #[test]
    fn spearman_sees_ranks_and_shares_them_between_ties() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 30.0, 1000.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(mean_ranks(&[5.0, 1.0, 5.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn groups_are_equal_in_size_whatever_the_ties() {
        let groups = grouped(&[1.0; 100], 10, 3);
        for g in 0..10 {
            assert_eq!(groups.iter().filter(|&&x| x == g).count(), 10);
        }
    }
}
