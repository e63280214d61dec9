//! Serving: resolves a name (model id, artifact id, or unique model name) to stored weights,
//! loads them into an architecture (on the worker pool), keeps loaded models under a memory
//! budget with least-recently-used eviction, and runs inference on the worker pool with bounded
//! admission (beyond it callers get [`ServingError::Busy`], i.e. 429).

pub mod batch;
pub mod bert;
pub mod request;
pub mod weights;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::{ErrorKind, Failure};
use crate::formats::safetensors::{Header, Limits};
use crate::infer::mlp::{DenseLayer, Mlp, MlpConfig, MlpError};
use crate::pool::{PoolError, WorkerPool};
use crate::store::{BlobStore, SharedMetadataStore, StoreError, StoredFile};

pub use batch::Timing;
use batch::{BatchConfig, Batcher, RunFn};

/// Why a failure of ours happened, kept for the log. Shared, because one failed batch answers
/// every request that was merged into it.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServingError {
    #[error("no model or artifact named '{0}'")]
    NotFound(String),
    #[error("'{0}' names several models; use its id")]
    Ambiguous(String),
    /// The weights exist but cannot be served (no or unsupported architecture, unsupported storage).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    BadInput(String),
    /// The input is well-formed but the forward pass left f32's range (an activation or output
    /// became infinite or NaN): answered 422 instead of a meaningless number.
    #[error("{0}")]
    Overflow(String),
    /// The request itself is refused (a limit, or a value that does not fit the model).
    #[error(transparent)]
    Request(#[from] request::InvalidRequest),
    #[error("too many inference requests in flight; retry shortly")]
    Busy,
    /// Our fault: the client is told nothing more, the cause goes to the log.
    #[error("internal error while {context}")]
    Internal {
        context: &'static str,
        #[source]
        source: Cause,
    },
}

impl ServingError {
    /// Whether the error comes from one request's input, so that a merged batch failing with it
    /// is re-run request by request (see [`batch`]).
    pub fn is_input_fault(&self) -> bool {
        matches!(self, ServingError::BadInput(_) | ServingError::Overflow(_))
    }

    /// A failure of ours while doing `context` (a gerund: "reading a stored file").
    pub fn internal(
        context: &'static str,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ServingError::Internal {
            context,
            source: Arc::from(cause.into()),
        }
    }
}

impl Failure for ServingError {
    fn kind(&self) -> ErrorKind {
        match self {
            ServingError::NotFound(_) => ErrorKind::NotFound,
            ServingError::Ambiguous(_) | ServingError::BadInput(_) => ErrorKind::BadRequest,
            ServingError::Request(invalid) => invalid.kind(),
            ServingError::Unsupported(_) | ServingError::Overflow(_) => ErrorKind::Unprocessable,
            ServingError::Busy => ErrorKind::TooManyRequests,
            ServingError::Internal { .. } => ErrorKind::Internal,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ServingError::NotFound(_) => "model-not-found",
            ServingError::Ambiguous(_) | ServingError::BadInput(_) => "bad-inference-request",
            ServingError::Request(invalid) => invalid.slug(),
            ServingError::Unsupported(_) => "model-not-servable",
            ServingError::Overflow(_) => "inference-overflow",
            ServingError::Busy => "inference-busy",
            ServingError::Internal { .. } => "internal-error",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ServingError::Busy => "Busy",
            ServingError::Request(invalid) => invalid.title(),
            ServingError::Internal { .. } => "Internal server error",
            _ => "Cannot serve model",
        }
    }

    /// The request field at fault (OpenAI's `param`): the model named, or the input sent.
    fn field(&self) -> Option<&str> {
        match self {
            ServingError::NotFound(_)
            | ServingError::Ambiguous(_)
            | ServingError::Unsupported(_) => Some("model"),
            ServingError::BadInput(_) | ServingError::Overflow(_) => Some("input"),
            ServingError::Request(invalid) => invalid.field(),
            ServingError::Busy | ServingError::Internal { .. } => None,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        matches!(self, ServingError::Busy).then_some(1)
    }
}

/// Most texts or token-id sequences one request may embed: `/v1/embeddings` inputs and `/v2`
/// BYTES elements alike (each is a sequence for the encoder, so the count bounds the work).
pub const MAX_INPUTS_PER_REQUEST: usize = 2048;

impl From<StoreError> for ServingError {
    fn from(error: StoreError) -> Self {
        ServingError::internal("reading the model catalogue", error)
    }
}

impl From<PoolError> for ServingError {
    fn from(error: PoolError) -> Self {
        ServingError::internal("running on the worker pool", error)
    }
}

/// What a served name resolved to (`model` or `artifact` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Model,
    Artifact,
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceKind::Model => "model",
            SourceKind::Artifact => "artifact",
        })
    }
}

/// Where a served name's weights come from.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: SourceKind,
    pub id: Uuid,
    pub name: String,
    pub sha256: String,
    pub files: Vec<StoredFile>,
}

/// A model ready to run.
#[derive(Debug)]
pub struct LoadedModel {
    pub source: Source,
    pub architecture: &'static str,
    /// How the Linear weights are held in memory: `f32`, `int8`, `q8_0`, `int4`, `q4_0`, `q4_1`
    /// (joined with `+` when layers differ).
    pub weights: String,
    /// Stored schemes that were dequantized to f32 at load (`fp8`, `q5_0`, ...), if any.
    pub dequantized: Vec<String>,
    pub kind: Arc<ModelKind>,
    pub memory_bytes: usize,
    /// Merges concurrent requests into batches (see [`batch`]).
    batcher: ModelBatcher,
}

/// The batching task of a loaded model: rows for `mlp`, token-id sequences for `bert`.
#[derive(Debug)]
enum ModelBatcher {
    Rows(Batcher<Vec<f32>, Vec<f32>>),
    Sequences(Batcher<Vec<u32>, Vec<f32>>),
}

/// Serving settings (from `config::Settings`).
#[derive(Debug, Clone, Copy)]
pub struct ServingOptions {
    /// Memory the resident models may use together (LRU eviction beyond it).
    pub memory_budget: usize,
    /// Inference requests admitted at once; beyond it, [`ServingError::Busy`].
    pub max_inflight: usize,
    /// Run int8 weights against int8-quantized activations (see `serving::bert`).
    pub int8_activations: bool,
    /// Items (sequences or rows) per dynamic batch, and how long a batch waits to fill.
    pub max_batch: usize,
    pub max_batch_delay: Duration,
    /// Testing aid: every batch sleeps this long before it runs (keeps requests in flight).
    pub debug_delay: Duration,
    /// The kernel tables (inference GEMMs; GELU, softmax, LayerNorm), chosen at start-up.
    pub dispatch: &'static crate::dispatch::Dispatch,
}

impl LoadedModel {
    /// Values per input row (`None` for text models) and per output row.
    pub fn widths(&self) -> (Option<usize>, usize) {
        match &*self.kind {
            ModelKind::Mlp(mlp) => (Some(mlp.input_width()), mlp.output_width()),
            ModelKind::Bert(bert) => (None, bert.hidden_size()),
        }
    }
}

#[derive(Debug)]
pub enum ModelKind {
    Mlp(Mlp),
    Bert(Box<bert::BertServing>),
}

struct Resident {
    model: Arc<LoadedModel>,
    last_used: Instant,
}

pub struct ServingRegistry {
    store: SharedMetadataStore,
    blobs: BlobStore,
    pool: Arc<WorkerPool>,
    limits: Limits,
    options: ServingOptions,
    resident: Mutex<HashMap<Uuid, Resident>>,
    /// Admission for inference: requests beyond these permits are refused at once (429).
    inflight: Arc<Semaphore>,
    /// Threads a BERT forward pass spreads its Linear layers and attention heads over; entered
    /// only from worker-pool jobs (`install`), so inference never runs on the async executor.
    compute: Arc<rayon::ThreadPool>,
}

impl ServingRegistry {
    pub fn new(
        store: SharedMetadataStore,
        blobs: BlobStore,
        pool: Arc<WorkerPool>,
        limits: Limits,
        options: ServingOptions,
    ) -> Self {
        ServingRegistry {
            store,
            blobs,
            pool: pool.clone(),
            limits,
            options,
            resident: Mutex::new(HashMap::new()),
            inflight: Arc::new(Semaphore::new(options.max_inflight.max(1))),
            compute: Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(pool.size())
                    .thread_name(|index| format!("quantd-infer-{index}"))
                    .build()
                    .expect("building the inference thread pool"),
            ),
        }
    }

    /// Resolves a model id, an artifact id, or a unique model name.
    pub async fn resolve(&self, name: &str) -> Result<Source, ServingError> {
        if let Ok(id) = Uuid::parse_str(name) {
            if let Some(model) = self.store.get_model(id).await? {
                return Ok(Source {
                    kind: SourceKind::Model,
                    id,
                    name: model.name,
                    sha256: model.sha256,
                    files: model.files,
                });
            }
            if let Some(artifact) = self.store.get_artifact(id).await? {
                let model_name = self
                    .store
                    .get_model(artifact.model_id)
                    .await?
                    .map(|m| m.name)
                    .unwrap_or_default();
                let files = artifact
                    .files
                    .iter()
                    .filter(|f| f.filename != "model.safetensors")
                    .cloned()
                    .collect();
                return Ok(Source {
                    kind: SourceKind::Artifact,
                    id,
                    name: format!("{model_name}@{}", artifact.scheme),
                    sha256: artifact.sha256,
                    files,
                });
            }
            return Err(ServingError::NotFound(name.to_owned()));
        }
        let ids = self.store.model_ids_by_name(name, 2).await?;
        match ids.as_slice() {
            [] => Err(ServingError::NotFound(name.to_owned())),
            [id] => Box::pin(self.resolve(&id.to_string())).await,
            _ => Err(ServingError::Ambiguous(name.to_owned())),
        }
    }

    /// The loaded model for `name`, loading it (on the worker pool) if needed.
    pub async fn get_or_load(&self, name: &str) -> Result<Arc<LoadedModel>, ServingError> {
        let source = self.resolve(name).await?;
        if let Some(resident) = self
            .resident
            .lock()
            .expect("not poisoned")
            .get_mut(&source.id)
        {
            resident.last_used = Instant::now();
            return Ok(resident.model.clone());
        }
        let read = |sha: String| async move {
            self.blobs
                .read_small(&sha)
                .await
                .map_err(|e| ServingError::internal("reading a stored companion file", e))
        };
        let config_bytes = match source.files.iter().find(|f| f.filename == "config.json") {
            Some(file) => read(file.sha256.clone()).await?,
            None => {
                return Err(ServingError::Unsupported(format!(
                    "{} {} has no config.json: attach one naming its architecture (model_type)",
                    source.kind, source.id
                )))
            }
        };
        let tokenizer = match source.files.iter().find(|f| f.filename == "tokenizer.json") {
            Some(file) => Some(read(file.sha256.clone()).await?),
            None => None,
        };
        let path = self.blobs.local_path(&source.sha256);
        let limits = self.limits;
        let options = self.options;
        let slot = self.pool.acquire().await?;
        let loaded_source = source.clone();
        let model = self
            .pool
            .run(slot, move || {
                load(
                    &path,
                    &config_bytes,
                    tokenizer.as_deref(),
                    loaded_source,
                    limits,
                    options,
                )
            })
            .await??;
        let model = Arc::new(self.start_batcher(model));
        let mut resident = self.resident.lock().expect("not poisoned");
        resident.insert(
            source.id,
            Resident {
                model: model.clone(),
                last_used: Instant::now(),
            },
        );
        // Least-recently-used eviction down to the budget; the model just loaded stays.
        loop {
            let total: usize = resident.values().map(|r| r.model.memory_bytes).sum();
            if total <= self.options.memory_budget {
                break;
            }
            let victim = resident
                .iter()
                .filter(|(id, _)| **id != source.id)
                .min_by_key(|(_, r)| r.last_used)
                .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    tracing::info!(model = %id, "evicting a served model over the memory budget");
                    resident.remove(&id);
                }
                None => break,
            }
        }
        Ok(model)
    }

    /// Drops a loaded model; returns whether it was loaded.
    pub async fn unload(&self, name: &str) -> Result<bool, ServingError> {
        let source = self.resolve(name).await?;
        Ok(self
            .resident
            .lock()
            .expect("not poisoned")
            .remove(&source.id)
            .is_some())
    }

    /// Drops the loaded copy of a model whose companion files changed (a new `config.json` or
    /// `tokenizer.json`), so that the next request loads it as it is now. Requests already
    /// running finish on the copy they hold.
    pub fn forget(&self, id: Uuid) -> bool {
        self.resident
            .lock()
            .expect("not poisoned")
            .remove(&id)
            .is_some()
    }

    pub fn is_loaded(&self, id: Uuid) -> bool {
        self.resident
            .lock()
            .expect("not poisoned")
            .contains_key(&id)
    }

    /// Starts the batching task of a freshly loaded model.
    fn start_batcher(&self, loaded: Loaded) -> LoadedModel {
        let config = BatchConfig {
            max_batch: self.options.max_batch,
            max_delay: self.options.max_batch_delay,
            max_concurrent: self.pool.size(),
        };
        let kind = Arc::new(loaded.kind);
        let pool = self.pool.clone();
        let delay = self.options.debug_delay;
        let batcher = match &*kind {
            ModelKind::Mlp(_) => {
                let kind = kind.clone();
                let run: RunFn<Vec<f32>, Vec<f32>> = Arc::new(move |rows: Arc<[Vec<f32>]>| {
                    let (kind, pool) = (kind.clone(), pool.clone());
                    Box::pin(async move {
                        debug_delay(delay).await;
                        let slot = pool.acquire().await?;
                        pool.run(slot, move || match &*kind {
                            ModelKind::Mlp(mlp) => run_mlp(mlp, &rows),
                            ModelKind::Bert(_) => unreachable!("an mlp batcher"),
                        })
                        .await?
                    })
                });
                ModelBatcher::Rows(Batcher::start(config, run))
            }
            ModelKind::Bert(_) => {
                let kind = kind.clone();
                let compute = self.compute.clone();
                let run: RunFn<Vec<u32>, Vec<f32>> = Arc::new(move |sequences: Arc<[Vec<u32>]>| {
                    let (kind, pool, compute) = (kind.clone(), pool.clone(), compute.clone());
                    Box::pin(async move {
                        debug_delay(delay).await;
                        // One pool job per batch; inside it the forward pass spreads over the
                        // compute threads.
                        let slot = pool.acquire().await?;
                        pool.run(slot, move || {
                            let embeddings = compute.install(|| match &*kind {
                                ModelKind::Bert(bert) => bert.embed(&sequences, true),
                                ModelKind::Mlp(_) => unreachable!("a bert batcher"),
                            })?;
                            check_embeddings(&embeddings)?;
                            Ok(embeddings)
                        })
                        .await?
                    })
                });
                ModelBatcher::Sequences(Batcher::start(config, run))
            }
        };
        LoadedModel {
            source: loaded.source,
            architecture: loaded.architecture,
            weights: loaded.weights,
            dequantized: loaded.dequantized,
            memory_bytes: loaded.memory_bytes,
            kind,
            batcher,
        }
    }

    /// The kernel tables in use.
    pub fn dispatch(&self) -> &'static crate::dispatch::Dispatch {
        self.options.dispatch
    }

    /// Admission: a permit while the request is in flight, or [`ServingError::Busy`] (429).
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ServingError> {
        self.inflight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServingError::Busy)
    }

    /// Runs `rows` inputs through an `mlp` model (dynamically batched with other requests, on
    /// the worker pool). Returns the output rows, concatenated.
    pub async fn infer(
        &self,
        model: Arc<LoadedModel>,
        input: Vec<f32>,
        rows: usize,
    ) -> Result<(Vec<f32>, Timing), ServingError> {
        let _permit = self.admit()?;
        let ModelBatcher::Rows(batcher) = &model.batcher else {
            return Err(ServingError::Unsupported(
                "a bert model embeds text: use POST /v1/embeddings".into(),
            ));
        };
        // The rows must be exactly `rows × input width` values: checked here, not trusted from
        // the caller (an empty input with many rows would otherwise mean a zero-width chunk).
        let width = model.widths().0.unwrap_or(0);
        if width == 0 || rows == 0 || rows.checked_mul(width) != Some(input.len()) {
            return Err(ServingError::BadInput(format!(
                "{} values are not {rows} rows of {width}",
                input.len()
            )));
        }
        let items: Vec<Vec<f32>> = input.chunks_exact(width).map(<[f32]>::to_vec).collect();
        let batched = batcher.submit(items).await?;
        let timing = batched.timing;
        Ok((batched.outputs.into_iter().flatten().collect(), timing))
    }

    /// Tokenizes texts with a `bert` model's tokenizer on the worker pool (tokenizing is CPU work
    /// and stays off the async executor).
    pub async fn tokenize(
        &self,
        model: Arc<LoadedModel>,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<u32>>, ServingError> {
        let slot = self.pool.acquire().await?;
        self.pool
            .run(slot, move || match &*model.kind {
                ModelKind::Bert(bert) => texts
                    .iter()
                    .map(|text| {
                        bert.tokenizer.encode(text).map_err(|e| {
                            ServingError::BadInput(format!("cannot tokenize input: {e}"))
                        })
                    })
                    .collect(),
                ModelKind::Mlp(_) => Err(ServingError::Unsupported(
                    "this model does not take text".into(),
                )),
            })
            .await?
    }

    /// Embeds token-id sequences with a `bert` model (L2-normalised; dynamically batched with
    /// other requests, on the worker pool).
    pub async fn embed(
        &self,
        model: Arc<LoadedModel>,
        batch: Vec<Vec<u32>>,
    ) -> Result<(Vec<Vec<f32>>, Timing), ServingError> {
        let _permit = self.admit()?;
        let (ModelKind::Bert(bert), ModelBatcher::Sequences(batcher)) =
            (&*model.kind, &model.batcher)
        else {
            return Err(ServingError::Unsupported(
                "embeddings need a bert model".into(),
            ));
        };
        // Check every sequence before it joins a batch shared with other requests.
        for (index, sequence) in batch.iter().enumerate() {
            bert.config
                .check_sequence(index, sequence)
                .map_err(|e| ServingError::BadInput(e.to_string()))?;
        }
        let batched = batcher.submit(batch).await?;
        let timing = batched.timing;
        Ok((batched.outputs, timing))
    }
}

/// Refuses embeddings with a non-finite value (they would be serialized as JSON `null`s).
/// Token ids are checked against the vocabulary and the weights are finite, so this guards the
/// arithmetic, not the input; the re-run after a failed batch finds the sequence it came from.
fn check_embeddings(embeddings: &[Vec<f32>]) -> Result<(), ServingError> {
    match embeddings
        .iter()
        .position(|e| e.iter().any(|v| !v.is_finite()))
    {
        Some(index) => Err(ServingError::Overflow(format!(
            "the embedding of sequence {index} overflowed f32"
        ))),
        None => Ok(()),
    }
}

async fn debug_delay(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

fn run_mlp(mlp: &Mlp, rows: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ServingError> {
    let input: Vec<f32> = rows.iter().flatten().copied().collect();
    let output = mlp.forward(&input, rows.len()).map_err(|e| match e {
        MlpError::Overflow { .. } => ServingError::Overflow(e.to_string()),
        _ => ServingError::BadInput(e.to_string()),
    })?;
    let width = mlp.output_width();
    Ok(output
        .chunks_exact(width.max(1))
        .map(<[f32]>::to_vec)
        .collect())
}

/// A model as loaded from storage, before its batcher starts.
struct Loaded {
    source: Source,
    architecture: &'static str,
    weights: String,
    dequantized: Vec<String>,
    kind: ModelKind,
    memory_bytes: usize,
}

/// Loads a model from a safetensors file by its config's `model_type` (blocking: runs on the
/// worker pool).
fn load(
    path: &std::path::Path,
    config_bytes: &[u8],
    tokenizer: Option<&[u8]>,
    source: Source,
    limits: Limits,
    options: ServingOptions,
) -> Result<Loaded, ServingError> {
    let config: serde_json::Value = serde_json::from_slice(config_bytes)
        .map_err(|e| ServingError::Unsupported(format!("config.json is not JSON: {e}")))?;
    let model_type = config
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    if !matches!(model_type, "mlp" | "bert") {
        return Err(ServingError::Unsupported(if model_type.is_empty() {
            "config.json has no model_type; this build serves model_type 'mlp' and 'bert'"
                .to_owned()
        } else {
            format!("model_type '{model_type}' is not served by this build (supported: mlp, bert)")
        }));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| ServingError::internal("opening the stored weights", e))?;
    // SAFETY: blobs are content-addressed and never modified in place (see jobs::pipeline).
    let mapping = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| ServingError::internal("mapping the stored weights", e))?;
    let int8 = if options.int8_activations {
        weights::Int8Mode::PerRow
    } else {
        weights::Int8Mode::Blocks
    };
    // Stored files were validated at upload / written by quantd, so a parse failure here is ours.
    let (header, gguf);
    let weight_file = if mapping.starts_with(b"GGUF") {
        gguf =
            crate::formats::gguf::read_gguf(&mapping, &crate::formats::gguf::GgufLimits::REFERENCE)
                .map_err(|e| ServingError::internal("reading the stored GGUF file", e))?;
        weights::WeightFile::Gguf {
            file: &mapping,
            gguf: &gguf,
        }
    } else {
        header = Header::parse_file(&mapping, &limits)
            .map_err(|e| ServingError::internal("reading the stored safetensors header", e))?;
        weights::WeightFile::Safetensors {
            file: &mapping,
            header: &header,
        }
    };
    let mut report = weights::LoadReport::default();
    if model_type == "bert" {
        let bert = bert::load_bert(
            &weight_file,
            config_bytes,
            tokenizer,
            options.dispatch,
            int8,
            &mut report,
        )?;
        return Ok(Loaded {
            source,
            architecture: "bert",
            weights: report.weights(),
            dequantized: report.dequantized.iter().map(|s| s.to_string()).collect(),
            memory_bytes: bert.memory_bytes,
            kind: ModelKind::Bert(Box::new(bert)),
        });
    }
    let mlp_config =
        MlpConfig::from_value(&config).map_err(|e| ServingError::Unsupported(e.to_string()))?;
    let mut layers = Vec::new();
    for (name, activation) in mlp_config.layers() {
        let (outputs, inputs) = weight_file.linear_shape(name).ok_or_else(|| {
            ServingError::Unsupported(
                MlpError::Layer {
                    layer: name.to_owned(),
                    reason: format!("no 2-D tensor '{name}.weight' ([out, in])"),
                }
                .to_string(),
            )
        })?;
        let weights = weight_file
            .linear(name, outputs, inputs, int8, &mut report)
            .map_err(|e| match e {
                ServingError::Unsupported(reason) => ServingError::Unsupported(
                    MlpError::Layer {
                        layer: name.to_owned(),
                        reason,
                    }
                    .to_string(),
                ),
                other => other,
            })?;
        let bias = weight_file.float(&format!("{name}.bias"))?;
        layers.push(DenseLayer {
            name: name.to_owned(),
            inputs,
            outputs,
            weights,
            bias,
            activation,
        });
    }
    let mut mlp = Mlp::new(layers, mlp_config.softmax())
        .map_err(|e| ServingError::Unsupported(e.to_string()))?;
    mlp.kernels = options.dispatch.gemm;
    let memory_bytes = mlp.weight_bytes();
    Ok(Loaded {
        source,
        architecture: "mlp",
        weights: report.weights(),
        dequantized: report.dequantized.iter().map(|s| s.to_string()).collect(),
        kind: ModelKind::Mlp(mlp),
        memory_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn every_serving_error_says_its_kind_slug_and_field() {
        let cases = [
            (
                ServingError::NotFound("m".into()),
                ErrorKind::NotFound,
                "model-not-found",
                Some("model"),
            ),
            (
                ServingError::Ambiguous("m".into()),
                ErrorKind::BadRequest,
                "bad-inference-request",
                Some("model"),
            ),
            (
                ServingError::Unsupported("no".into()),
                ErrorKind::Unprocessable,
                "model-not-servable",
                Some("model"),
            ),
            (
                ServingError::BadInput("no".into()),
                ErrorKind::BadRequest,
                "bad-inference-request",
                Some("input"),
            ),
            (
                ServingError::Overflow("inf".into()),
                ErrorKind::Unprocessable,
                "inference-overflow",
                Some("input"),
            ),
            (
                ServingError::Busy,
                ErrorKind::TooManyRequests,
                "inference-busy",
                None,
            ),
            (
                request::InvalidRequest::at("dimensions", "too wide").into(),
                ErrorKind::BadRequest,
                "bad-inference-request",
                Some("dimensions"),
            ),
        ];
        for (error, kind, slug, field) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.slug(), slug, "{error}");
            assert_eq!(error.field(), field, "{error}");
        }
        assert_eq!(ServingError::Busy.retry_after(), Some(1));
    }

    #[test]
    fn internal_errors_keep_their_cause_as_the_source() {
        let cause = std::io::Error::other("disk on fire");
        let error = ServingError::internal("reading a stored file", cause);
        assert_eq!(error.kind(), ErrorKind::Internal);
        assert_eq!(error.source().unwrap().to_string(), "disk on fire");
        assert_eq!(
            crate::error::SourceChain(&error).to_string(),
            "internal error while reading a stored file: disk on fire"
        );
        // Shared by every request of a failed batch.
        let copy = error.clone();
        assert_eq!(copy.source().unwrap().to_string(), "disk on fire");
        assert!(!error.public_message().contains("fire"));
    }
}
