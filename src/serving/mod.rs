//! Serving: resolves a name (model id, artifact id, or unique model name) to stored weights,
//! loads them into an architecture (on the worker pool), keeps loaded models under a memory
//! budget with least-recently-used eviction, and runs inference on the worker pool with bounded
//! admission (beyond it callers get [`ServingError::Busy`], i.e. 429).

pub mod bert;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::formats::safetensors::{Dtype, Header, Limits};
use crate::infer::mlp::{DenseLayer, DenseWeights, Mlp, MlpConfig, MlpError};
use crate::pool::{PoolError, WorkerPool};
use crate::quant::convert::float_values;
use crate::store::{BlobStore, SharedMetadataStore, StoreError, StoredFile};

#[derive(Debug, thiserror::Error)]
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
    #[error("too many inference requests in flight; retry shortly")]
    Busy,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServingError {
    fn from(error: StoreError) -> Self {
        ServingError::Internal(error.to_string())
    }
}

impl From<PoolError> for ServingError {
    fn from(error: PoolError) -> Self {
        ServingError::Internal(error.to_string())
    }
}

/// Where a served name's weights come from.
#[derive(Debug, Clone)]
pub struct Source {
    /// `model` or `artifact`.
    pub kind: &'static str,
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
    /// `f32` or `int8` (Linear weights as held in memory).
    pub weights: &'static str,
    pub kind: ModelKind,
    pub memory_bytes: usize,
}

impl LoadedModel {
    /// Values per input row (`None` for text models) and per output row.
    pub fn widths(&self) -> (Option<usize>, usize) {
        match &self.kind {
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
    memory_budget: usize,
    resident: Mutex<HashMap<Uuid, Resident>>,
    /// Admission for inference: requests beyond these permits are refused at once (429).
    inflight: Arc<Semaphore>,
    /// Run int8 weights against int8-quantized activations (see `serving::bert`).
    int8_activations: bool,
}

impl ServingRegistry {
    pub fn new(
        store: SharedMetadataStore,
        blobs: BlobStore,
        pool: Arc<WorkerPool>,
        limits: Limits,
        memory_budget: usize,
        max_inflight: usize,
        int8_activations: bool,
    ) -> Self {
        ServingRegistry {
            store,
            blobs,
            pool,
            limits,
            memory_budget,
            resident: Mutex::new(HashMap::new()),
            inflight: Arc::new(Semaphore::new(max_inflight.max(1))),
            int8_activations,
        }
    }

    /// Resolves a model id, an artifact id, or a unique model name.
    pub async fn resolve(&self, name: &str) -> Result<Source, ServingError> {
        if let Ok(id) = Uuid::parse_str(name) {
            if let Some(model) = self.store.get_model(id).await? {
                return Ok(Source {
                    kind: "model",
                    id,
                    name: model.name,
                    sha256: model.sha256,
                    files: model.files,
                });
            }
            if let Some(artifact) = self.store.get_artifact(id).await? {
                if artifact.format == "gguf" {
                    return Err(ServingError::Unsupported(format!(
                        "artifact {id} is a GGUF file; serving reads safetensors artifacts"
                    )));
                }
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
                    kind: "artifact",
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
                .map_err(|e| ServingError::Internal(e.to_string()))
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
        let int8_activations = self.int8_activations;
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
                    int8_activations,
                )
            })
            .await??;
        let model = Arc::new(model);
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
            if total <= self.memory_budget {
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

    pub fn is_loaded(&self, id: Uuid) -> bool {
        self.resident
            .lock()
            .expect("not poisoned")
            .contains_key(&id)
    }

    /// Runs `rows` inputs through an `mlp` model on the worker pool.
    pub async fn infer(
        &self,
        model: Arc<LoadedModel>,
        input: Vec<f32>,
        rows: usize,
    ) -> Result<Vec<f32>, ServingError> {
        let permit = self
            .inflight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServingError::Busy)?;
        let slot = self.pool.acquire().await?;
        let output = self
            .pool
            .run(slot, move || match &model.kind {
                ModelKind::Mlp(mlp) => mlp
                    .forward(&input, rows)
                    .map_err(|e| ServingError::BadInput(e.to_string())),
                ModelKind::Bert(_) => Err(ServingError::Unsupported(
                    "a bert model embeds text: use POST /v1/embeddings".into(),
                )),
            })
            .await??;
        drop(permit);
        Ok(output)
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
            .run(slot, move || match &model.kind {
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

    /// Embeds token-id sequences with a `bert` model on the worker pool.
    pub async fn embed(
        &self,
        model: Arc<LoadedModel>,
        batch: Vec<Vec<u32>>,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, ServingError> {
        let permit = self
            .inflight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServingError::Busy)?;
        if !matches!(model.kind, ModelKind::Bert(_)) {
            return Err(ServingError::Unsupported(
                "embeddings need a bert model".into(),
            ));
        }
        // Split the batch over the worker threads (contiguous chunks of sequences, balanced by
        // token count), run the chunks in parallel and reassemble them in order.
        let total_tokens: usize = batch.iter().map(Vec::len).sum();
        let parts = self.pool.size().min(batch.len()).max(1);
        let target = total_tokens.div_ceil(parts).max(1);
        let mut chunks: Vec<Vec<Vec<u32>>> = Vec::with_capacity(parts);
        let mut current = Vec::new();
        let mut current_tokens = 0;
        for sequence in batch {
            current_tokens += sequence.len();
            current.push(sequence);
            if current_tokens >= target && chunks.len() + 1 < parts {
                chunks.push(std::mem::take(&mut current));
                current_tokens = 0;
            }
        }
        if !current.is_empty() {
            chunks.push(current);
        }
        let runs = chunks.into_iter().map(|chunk| {
            let model = model.clone();
            async move {
                let slot = self.pool.acquire().await?;
                self.pool
                    .run(slot, move || match &model.kind {
                        ModelKind::Bert(bert) => bert.embed(&chunk, normalize),
                        ModelKind::Mlp(_) => unreachable!("checked above"),
                    })
                    .await?
            }
        });
        let mut output = Vec::new();
        for part in futures::future::join_all(runs).await {
            output.extend(part?);
        }
        drop(permit);
        Ok(output)
    }
}

/// Loads a model from a safetensors file by its config's `model_type` (blocking: runs on the
/// worker pool).
fn load(
    path: &std::path::Path,
    config_bytes: &[u8],
    tokenizer: Option<&[u8]>,
    source: Source,
    limits: Limits,
    int8_activations: bool,
) -> Result<LoadedModel, ServingError> {
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
    let file = std::fs::File::open(path).map_err(|e| ServingError::Internal(e.to_string()))?;
    // SAFETY: blobs are content-addressed and never modified in place (see jobs::pipeline).
    let mapping =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ServingError::Internal(e.to_string()))?;
    let header =
        Header::parse_file(&mapping, &limits).map_err(|e| ServingError::Internal(e.to_string()))?;
    if model_type == "bert" {
        let bert = bert::load_bert(
            &mapping,
            &header,
            config_bytes,
            tokenizer,
            crate::infer::kernels::select(false),
            int8_activations,
        )?;
        return Ok(LoadedModel {
            source,
            architecture: "bert",
            weights: if bert.int8 { "int8" } else { "f32" },
            memory_bytes: bert.memory_bytes,
            kind: ModelKind::Bert(Box::new(bert)),
        });
    }
    let mlp_config =
        MlpConfig::from_value(&config).map_err(|e| ServingError::Unsupported(e.to_string()))?;
    let bytes_of = |name: &str| {
        header.get(name).map(|t| {
            (
                t,
                &mapping[(header.data_start + t.data_offsets.0) as usize
                    ..(header.data_start + t.data_offsets.1) as usize],
            )
        })
    };
    let unsupported = |layer: &str, why: String| {
        ServingError::Unsupported(
            MlpError::Layer {
                layer: layer.to_owned(),
                reason: why,
            }
            .to_string(),
        )
    };
    let mut layers = Vec::new();
    let mut int8 = false;
    for (name, activation) in mlp_config.layers() {
        let (info, bytes) = bytes_of(&format!("{name}.weight"))
            .ok_or_else(|| unsupported(name, format!("no tensor '{name}.weight'")))?;
        if info.shape.len() != 2 {
            return Err(unsupported(
                name,
                format!("weight has shape {:?}, expected [out, in]", info.shape),
            ));
        }
        let (outputs, inputs) = (info.shape[0], info.shape[1]);
        let weights = match info.dtype {
            Dtype::I8 => {
                let (scale_info, scale_bytes) = bytes_of(&format!("{name}.weight_scale"))
                    .ok_or_else(|| unsupported(name, "int8 weight without weight_scale".into()))?;
                let scales = float_values(scale_info.dtype, scale_bytes).ok_or_else(|| {
                    unsupported(name, "weight_scale is not a float tensor".into())
                })?;
                let zero_points = bytes_of(&format!("{name}.weight_zero_point"))
                    .map(|(_, b)| b.iter().map(|&v| v as i8).collect())
                    .unwrap_or_default();
                int8 = true;
                DenseWeights::Int8 {
                    q: bytes.iter().map(|&v| v as i8).collect(),
                    scales,
                    zero_points,
                }
            }
            dtype => DenseWeights::F32(float_values(dtype, bytes).ok_or_else(|| {
                unsupported(
                    name,
                    format!(
                        "weights stored as {} cannot be served (supported: F32, F16, BF16, int8)",
                        dtype.as_str()
                    ),
                )
            })?),
        };
        let bias = match bytes_of(&format!("{name}.bias")) {
            Some((t, b)) => Some(
                float_values(t.dtype, b)
                    .ok_or_else(|| unsupported(name, "bias is not a float tensor".into()))?,
            ),
            None => None,
        };
        layers.push(DenseLayer {
            name: name.to_owned(),
            inputs,
            outputs,
            weights,
            bias,
            activation,
        });
    }
    let mlp = Mlp::new(layers, mlp_config.softmax())
        .map_err(|e| ServingError::Unsupported(e.to_string()))?;
    let memory_bytes = mlp.weight_bytes();
    Ok(LoadedModel {
        source,
        architecture: "mlp",
        weights: if int8 { "int8" } else { "f32" },
        kind: ModelKind::Mlp(mlp),
        memory_bytes,
    })
}
