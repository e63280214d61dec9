//! `quantd quantize`: the job pipeline run offline on local files, without a server or database.
//! The same validation, kernels, formats and report as a job; useful in scripts and CI.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;

use crate::config::QuantizeArgs;
use crate::dispatch::Dispatch;
use crate::formats::compressed_tensors::merge_into_config;
use crate::formats::safetensors::Limits;
use crate::jobs::output::ModelInfo;
use crate::jobs::pipeline::{quantize_file, PipelineContext, PipelineError, ProgressCounters};
use crate::jobs::spec::JobSpec;

/// Runs the pipeline; prints a one-line summary per tensor and the totals.
pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let options = args
        .options
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("--options is not valid JSON")?;
    let spec = JobSpec::parse(&args.scheme, options.as_ref(), Some(&args.format))?;
    let dispatch = Dispatch::select(args.kernels)?;
    let model_config = args
        .config
        .as_ref()
        .map(std::fs::read)
        .transpose()
        .context("reading --config")?;
    let model = ModelInfo {
        name: args.name.clone().or_else(|| {
            args.input
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        }),
        config: model_config
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
            .context("--config is not valid JSON")?,
    };
    let cancel = AtomicBool::new(false);
    let progress = ProgressCounters::default();
    let ctx = PipelineContext {
        dispatch,
        limits: Limits {
            max_header_bytes: args.max_header_bytes,
            max_file_bytes: u64::MAX,
        },
        cancel: &cancel,
        progress: &progress,
        tensor_delay: Duration::ZERO,
    };
    let output = match quantize_file(&args.input, &args.output, &spec, &model, &ctx) {
        Ok(output) => output,
        Err(PipelineError::InvalidInput { slug, detail }) => anyhow::bail!("{slug}: {detail}"),
        Err(e) => return Err(e.into()),
    };
    if let Some(quantization_config) = output.quantization_config.clone() {
        let merged = merge_into_config(model_config.as_deref(), quantization_config)
            .map_err(anyhow::Error::msg)?;
        let config_out = args.config_out.clone().unwrap_or_else(|| {
            args.output.parent().map_or_else(
                || PathBuf::from("config.json"),
                |dir| dir.join("config.json"),
            )
        });
        std::fs::write(&config_out, merged)
            .with_context(|| format!("writing {}", config_out.display()))?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&output.report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for tensor in &output.report.tensors {
        println!(
            "{:<48} {:<9} {:>10} B -> {:>10} B  sqnr {:>7}  cos {}",
            tensor.name,
            tensor.action,
            tensor.bytes_before,
            tensor.bytes_after,
            tensor.sqnr_db.map_or("-".to_owned(), |v| format!("{v:.2}")),
            tensor.cosine.map_or("-".to_owned(), |v| format!("{v:.6}")),
        );
    }
    let report = &output.report;
    println!(
        "{} tensors ({} quantized, isa {}): {} -> {} bytes, sha256 {} in {} ms",
        report.n_tensors,
        report.n_quantized,
        report.kernel_isa,
        report.bytes_before,
        report.bytes_after,
        output.sha256,
        report.duration_ms
    );
    Ok(())
}
