//! The dispatch API: choosing tables, parsing choices, naming ISAs, merging statistics.

use super::super::*;

#[test]
fn select_scalar_and_auto() {
    let table = select(KernelChoice::Scalar).unwrap();
    assert_eq!(table.isa, Isa::Scalar);
    assert!(std::ptr::eq(table, scalar()));
    assert_eq!(select(KernelChoice::Auto).unwrap().isa, detect_best());
    assert_eq!(available().first(), Some(&Isa::Scalar));
    assert!(available().contains(&detect_best()));
}

#[test]
fn unavailable_isa_is_an_error() {
    let mut rejected = 0;
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
        match select(isa.into()) {
            Ok(table) => {
                assert!(available().contains(&isa));
                assert_eq!(table.isa, isa);
            }
            Err(error) => {
                assert!(!available().contains(&isa));
                assert_eq!(
                    error,
                    KernelError::Unavailable {
                        requested: isa,
                        available: available()
                            .iter()
                            .map(|isa| isa.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                );
                assert!(error.to_string().contains(isa.name()));
                rejected += 1;
            }
        }
    }
    // Every machine lacks at least one of them (x86 has no NEON, aarch64 no AVX).
    assert!(rejected >= 1);
}

#[test]
fn kernel_choice_parses_and_isa_displays() {
    for (text, choice) in [
        ("auto", KernelChoice::Auto),
        ("scalar", KernelChoice::Scalar),
        ("avx2", KernelChoice::Avx2),
        ("AVX512", KernelChoice::Avx512),
        ("neon", KernelChoice::Neon),
    ] {
        assert_eq!(text.parse::<KernelChoice>(), Ok(choice));
    }
    let error = "sse4".parse::<KernelChoice>().unwrap_err();
    assert_eq!(
        error,
        KernelError::UnknownChoice {
            input: "sse4".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "unknown kernel `sse4`: expected one of auto, scalar, avx2, avx512, neon"
    );
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
        assert_eq!(
            isa.to_string().parse::<KernelChoice>(),
            Ok(KernelChoice::from(isa))
        );
    }
    assert_eq!(Isa::Avx512.to_string(), "avx512");
}

#[test]
fn error_stats_merge() {
    let mut total = ErrorStats {
        n: 2,
        sum_sq_err: 1.0,
        sum_sq_ref: 2.0,
        sum_sq_deq: 3.0,
        dot: 4.0,
        max_abs_err: 0.5,
    };
    total.merge(&ErrorStats {
        n: 3,
        sum_sq_err: 0.5,
        sum_sq_ref: 0.5,
        sum_sq_deq: 0.5,
        dot: -1.0,
        max_abs_err: 0.75,
    });
    let expected = ErrorStats {
        n: 5,
        sum_sq_err: 1.5,
        sum_sq_ref: 2.5,
        sum_sq_deq: 3.5,
        dot: 3.0,
        max_abs_err: 0.75,
    };
    assert_eq!(total, expected);
}
