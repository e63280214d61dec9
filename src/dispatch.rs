//! One kernel dispatch: every run-time dispatched kernel table of the service, chosen together
//! once from the `QUANTD_KERNELS` setting ([`KernelChoice`]) and passed down as one
//! `&'static Dispatch`.
//!
//! The tables themselves stay with their kernels (each module knows which CPU features its SIMD
//! code needs): int8 quantization ([`crate::quant::kernels`]), ggml block quantizers
//! ([`crate::quant::ggml`]), inference GEMMs ([`crate::infer::kernels`]) and element-wise
//! inference math ([`crate::infer::fastmath`]). This module only resolves one choice into all
//! four, so that a forced ISA holds for quantization and inference alike, and says what it
//! chose in one place (the start-up log line and `/api/v1/info` both read [`Dispatch`]).
//!
//! Pure like the kernels: no logging framework, no I/O. Holding a `&Dispatch` is the proof
//! that each of its tables may run on this CPU (each `select` hands out SIMD tables only after
//! run-time detection).

use std::fmt;
use std::sync::OnceLock;

use crate::infer::fastmath::{self, MathKernels};
use crate::infer::kernels::{self as gemm, GemmIsa, GemmKernels};
use crate::quant::ggml::{self, GgmlKernels};
use crate::quant::kernels::{self, Isa, KernelChoice, KernelError, Kernels};

/// Every kernel table of the service, for one [`KernelChoice`].
///
/// `Auto` gives each table the best ISA this CPU runs for it; a forced ISA (`scalar`, `avx2`,
/// `avx512`, `neon`) gives every table that ISA's version (the inference GEMMs add VNNI to
/// `avx512` where the CPU has it, and tables without a version for an ISA use their best one).
#[derive(Debug)]
pub struct Dispatch {
    /// What the operator asked for.
    pub requested: KernelChoice,
    /// int8 primitives (absmax, min/max, fused quantize with error sums); also selects the
    /// int4, fp8 and NF4 codecs (which follow its ISA).
    pub quant: &'static Kernels,
    /// ggml block quantizers (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
    pub ggml: &'static GgmlKernels,
    /// Inference GEMMs: f32, int8 × int8 and the block GEMMs.
    pub gemm: &'static GemmKernels,
    /// Inference element-wise math: GELU, softmax, LayerNorm.
    pub math: &'static MathKernels,
}

/// One cached [`Dispatch`] per choice, so that [`Dispatch::select`] can hand out `&'static`
/// values without leaking one per call (tests start many servers).
static CHOSEN: [OnceLock<Dispatch>; 5] = [const { OnceLock::new() }; 5];

fn slot(choice: KernelChoice) -> usize {
    match choice {
        KernelChoice::Auto => 0,
        KernelChoice::Scalar => 1,
        KernelChoice::Avx2 => 2,
        KernelChoice::Avx512 => 3,
        KernelChoice::Neon => 4,
    }
}

impl Dispatch {
    /// Resolves a choice into every table, or says why this CPU cannot honour it (a forced ISA
    /// it lacks). Detection runs once per choice; later calls return the same value.
    pub fn select(choice: KernelChoice) -> Result<&'static Dispatch, KernelError> {
        let cell = &CHOSEN[slot(choice)];
        if let Some(dispatch) = cell.get() {
            return Ok(dispatch);
        }
        let dispatch = Dispatch {
            requested: choice,
            quant: kernels::select(choice)?,
            ggml: ggml::select(choice)?,
            gemm: gemm::select(choice),
            math: fastmath::select(choice),
        };
        Ok(cell.get_or_init(|| dispatch))
    }

    /// The scalar reference tables (always available).
    pub fn scalar() -> &'static Dispatch {
        Self::select(KernelChoice::Scalar).expect("the scalar tables run on every CPU")
    }

    /// The instruction sets whose quantization kernels this CPU runs, scalar first, best last.
    pub fn available_isas() -> Vec<Isa> {
        kernels::available()
    }

    /// The inference GEMM tables this CPU runs, scalar first, best last.
    pub fn available_inference_isas() -> Vec<GemmIsa> {
        gemm::available().iter().map(|table| table.isa).collect()
    }
}

impl fmt::Display for Dispatch {
    /// One line for the start-up log: `quant=avx512 ggml=avx512 gemm=avx512vnni math=avx512`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "quant={} ggml={} gemm={} math={}",
            self.quant.isa, self.ggml.isa, self.gemm.isa, self.math.isa
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_forces_every_table() {
        let dispatch = Dispatch::scalar();
        assert_eq!(dispatch.quant.isa, Isa::Scalar);
        assert_eq!(dispatch.ggml.isa, Isa::Scalar);
        assert_eq!(dispatch.gemm.isa, GemmIsa::Scalar);
        assert_eq!(dispatch.math.isa, Isa::Scalar);
        assert_eq!(
            dispatch.to_string(),
            "quant=scalar ggml=scalar gemm=scalar math=scalar"
        );
    }

    #[test]
    fn auto_takes_the_best_of_each_table_and_is_chosen_once() {
        let dispatch = Dispatch::select(KernelChoice::Auto).unwrap();
        assert_eq!(Some(&dispatch.quant.isa), kernels::available().last());
        assert_eq!(
            Some(&dispatch.gemm.isa),
            Dispatch::available_inference_isas().last()
        );
        assert_eq!(dispatch.math.isa, fastmath::available().last().unwrap().isa);
        assert!(std::ptr::eq(
            dispatch,
            Dispatch::select(KernelChoice::Auto).unwrap()
        ));
    }

    #[test]
    fn a_forced_isa_holds_for_every_table_it_has() {
        for isa in Dispatch::available_isas() {
            let dispatch = Dispatch::select(isa.into()).unwrap();
            assert_eq!(dispatch.quant.isa, isa);
            assert_eq!(dispatch.ggml.isa, isa);
            if isa != Isa::Neon {
                assert_eq!(dispatch.gemm.isa.family(), isa, "{dispatch}");
                assert_eq!(dispatch.math.isa, isa, "{dispatch}");
            }
        }
    }

    #[test]
    fn an_isa_this_cpu_lacks_is_refused() {
        let missing = [KernelChoice::Avx2, KernelChoice::Avx512, KernelChoice::Neon]
            .into_iter()
            .find(|&choice| {
                !Dispatch::available_isas()
                    .into_iter()
                    .any(|isa| KernelChoice::from(isa) == choice)
            })
            .expect("no CPU runs both NEON and AVX2");
        assert!(matches!(
            Dispatch::select(missing),
            Err(KernelError::Unavailable { .. })
        ));
    }
}
