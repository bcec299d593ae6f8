//! A restricted unpickler for the `data.pkl` of a PyTorch checkpoint.
//!
//! It reads the opcodes that `torch.save` emits for a state dict (protocols 2 to 5) into plain
//! values, and nothing else: no Python object is ever constructed and no callable is ever run.
//! Globals are resolved against a fixed allow-list (the ordered dict, the tensor rebuild
//! functions and the typed storage classes); `REDUCE` is accepted only on the allowed callables,
//! and only with the arguments a state dict gives them. Any other global, callable or opcode is
//! refused with an error that names it.

use std::collections::{HashMap, HashSet};

/// Element type of a typed storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDType {
    F64,
    F32,
    F16,
    BF16,
}

impl StorageDType {
    /// The same element type in the weight loader's terms, where every conversion lives.
    pub fn stored(self) -> crate::weights::StoredDType {
        use crate::weights::StoredDType;
        match self {
            StorageDType::F64 => StoredDType::F64,
            StorageDType::F32 => StoredDType::F32,
            StorageDType::F16 => StoredDType::F16,
            StorageDType::BF16 => StoredDType::BF16,
        }
    }

    pub fn size(self) -> usize {
        match self {
            StorageDType::F64 => 8,
            StorageDType::F32 => 4,
            StorageDType::F16 | StorageDType::BF16 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            StorageDType::F64 => "f64",
            StorageDType::F32 => "f32",
            StorageDType::F16 => "f16",
            StorageDType::BF16 => "bf16",
        }
    }
}

/// The globals a state dict may reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageDType),
}

impl Global {
    fn lookup(module: &str, name: &str) -> Option<Self> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", "DoubleStorage") => Global::Storage(StorageDType::F64),
            ("torch", "FloatStorage") => Global::Storage(StorageDType::F32),
            ("torch", "HalfStorage") => Global::Storage(StorageDType::F16),
            ("torch", "BFloat16Storage") => Global::Storage(StorageDType::BF16),
            _ => return None,
        })
    }
}

/// A storage reference: `data/<key>` of the archive, holding `numel` elements of `dtype`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageRef {
    pub key: String,
    pub dtype: StorageDType,
    pub numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view into a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    /// In elements.
    pub offset: u64,
    pub shape: Vec<u64>,
    /// In elements.
    pub stride: Vec<u64>,
}

/// The values a state-dict pickle can produce.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "a bool",
            Value::Int(_) => "an int",
            Value::Float => "a float",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a global",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }

    /// Nodes in the value tree, to bound the work of copying memoised values.
    fn nodes(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => 1 + v.iter().map(Value::nodes).sum::<usize>(),
            Value::Dict(v) => 1 + v.iter().map(|(k, x)| k.nodes() + x.nodes()).sum::<usize>(),
            Value::Tensor(t) => 1 + t.shape.len() + t.stride.len(),
            Value::Str(s) => 1 + s.len() / 64,
            Value::Bytes(b) => 1 + b.len() / 64,
            _ => 1,
        }
    }
}

/// Why a pickle was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickleError {
    /// A global outside the allow-list (e.g. `os.system`, `builtins.eval`).
    ForbiddenGlobal { module: String, name: String },
    /// `REDUCE` of something that is not an allowed callable.
    ForbiddenCall { what: String },
    /// An opcode a state dict never contains.
    UnsupportedOpcode { opcode: u8, offset: usize },
    /// Anything else malformed, with the byte offset of the opcode.
    Malformed { offset: usize, reason: String },
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickleError::ForbiddenGlobal { module, name } => write!(
                f,
                "refused: the pickle references the global '{module}.{name}', which is not part \
                 of a tensor state dict (only collections.OrderedDict, torch._utils.\
                 _rebuild_tensor_v2/_rebuild_parameter and torch.*Storage are allowed); \
                 nothing was executed"
            ),
            PickleError::ForbiddenCall { what } => write!(
                f,
                "refused: the pickle calls {what}, which is not an allowed tensor constructor; \
                 nothing was executed"
            ),
            PickleError::UnsupportedOpcode { opcode, offset } => write!(
                f,
                "refused: pickle opcode 0x{opcode:02x} ('{}') at byte {offset} is not used by \
                 tensor state dicts; nothing was executed",
                (*opcode as char).escape_default()
            ),
            PickleError::Malformed { offset, reason } => {
                write!(f, "malformed pickle at byte {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for PickleError {}

/// Reads one pickle into a value. Storages stay references (`data/<key>` of the archive).
pub(crate) fn unpickle(data: &[u8]) -> Result<Value, PickleError> {
    Machine::new(data).run()
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for errors.
    at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Remaining nodes that may be copied out of the memo (guards against exponential blow-up).
    budget: usize,
}

type R<T> = Result<T, PickleError>;

/// Nesting a state dict never comes near (dict, tuple of arguments, tuple of sizes: 4 or 5).
const MAX_DEPTH: usize = 64;

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            budget: data.len().saturating_mul(16).max(1 << 20),
        }
    }

    fn err(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            offset: self.at,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err(format!("needs {n} more bytes past the end")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> R<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> R<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| self.err("line is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> R<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    /// Every value leaves the stack through here or [`pop_mark`](Self::pop_mark), on its way
    /// into a container: checking its depth there bounds the depth of everything built.
    fn pop(&mut self) -> R<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        let v = self.stack.pop().expect("checked");
        self.check_depth(&v)?;
        Ok(v)
    }
    /// Refuses values nested deeper than [`MAX_DEPTH`]: cloning, counting and dropping a value
    /// recurse, and a pickle of a few hundred kilobytes can nest a million levels.
    fn check_depth(&self, v: &Value) -> R<()> {
        let mut todo = vec![(v, 1usize)];
        while let Some((v, depth)) = todo.pop() {
            if depth > MAX_DEPTH {
                return Err(self.err(format!("values nested deeper than {MAX_DEPTH} levels")));
            }
            match v {
                Value::Tuple(items) | Value::List(items) => {
                    todo.extend(items.iter().map(|x| (x, depth + 1)));
                }
                Value::Dict(items) => {
                    for (k, x) in items {
                        todo.push((k, depth + 1));
                        todo.push((x, depth + 1));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
    fn top(&mut self) -> R<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.last_mut().expect("checked"))
    }
    /// The values pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK on the stack"))?;
        let items = self.stack.split_off(mark);
        for v in &items {
            self.check_depth(v)?;
        }
        Ok(items)
    }
    fn memo_get(&mut self, key: u32) -> R<()> {
        let v = self
            .memo
            .get(&key)
            .ok_or_else(|| self.err(format!("memo entry {key} was never stored")))?;
        let v = v.clone();
        self.charge(&v)?;
        self.stack.push(v);
        Ok(())
    }
    fn memo_put(&mut self, key: u32) -> R<()> {
        let v = self
            .stack
            .last()
            .ok_or_else(|| self.err("memo store with an empty stack"))?
            .clone();
        self.charge(&v)?;
        self.memo.insert(key, v);
        Ok(())
    }
    /// Counts a copied value against the budget.
    fn charge(&mut self, v: &Value) -> R<()> {
        let nodes = v.nodes();
        if nodes > self.budget {
            return Err(self.err("values copied too often (pickle bomb?)"));
        }
        self.budget -= nodes;
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> R<()> {
        match Global::lookup(module, name) {
            Some(g) => {
                self.stack.push(Value::Global(g));
                Ok(())
            }
            None => Err(PickleError::ForbiddenGlobal {
                module: module.to_string(),
                name: name.to_string(),
            }),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> R<()> {
        if items.len() % 2 != 0 {
            return Err(self.err("SETITEMS with an odd number of values"));
        }
        let at = self.at;
        let Value::Dict(d) = self.top()? else {
            return Err(PickleError::Malformed {
                offset: at,
                reason: "SETITEM(S) on something that is not a dict".into(),
            });
        };
        // Appended as they come, a repeated key included: looking each up would make a dict
        // of n keys cost n^2. The later of two equal keys wins when the dict is read
        // (`collect_tensors`), as in Python.
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> R<()> {
        let at = self.at;
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            _ => Err(PickleError::Malformed {
                offset: at,
                reason: "APPEND(S) on something that is not a list".into(),
            }),
        }
    }

    /// `REDUCE`: only the allowed callables, interpreted, never run.
    fn reduce(&mut self) -> R<()> {
        let args = self.pop()?;
        let func = self.pop()?;
        let Value::Tuple(args) = args else {
            return Err(self.err(format!("REDUCE arguments are {}, not a tuple", args.kind())));
        };
        let result = match func {
            Value::Global(Global::OrderedDict) => {
                if !args.is_empty() {
                    return Err(PickleError::ForbiddenCall {
                        what: "collections.OrderedDict with arguments".into(),
                    });
                }
                Value::Dict(Vec::new())
            }
            Value::Global(Global::RebuildTensorV2) => self.rebuild_tensor(args)?,
            Value::Global(Global::RebuildParameter) => match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => t,
                _ => return Err(self.err("_rebuild_parameter without a tensor")),
            },
            Value::Global(Global::Storage(d)) => {
                return Err(PickleError::ForbiddenCall {
                    what: format!(
                        "the storage class of {} (only a storage reference may name it)",
                        d.name()
                    ),
                })
            }
            other => {
                return Err(PickleError::ForbiddenCall {
                    what: other.kind().to_string(),
                })
            }
        };
        self.stack.push(result);
        Ok(())
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, meta])`.
    fn rebuild_tensor(&self, args: Vec<Value>) -> R<Value> {
        if args.len() < 4 {
            return Err(self.err("_rebuild_tensor_v2 with fewer than 4 arguments"));
        }
        let mut it = args.into_iter();
        let storage = match it.next() {
            Some(Value::Storage(storage)) => storage,
            _ => return Err(self.err("_rebuild_tensor_v2: the first argument is not a storage")),
        };
        let offset = match it.next() {
            Some(Value::Int(i)) if i >= 0 => i as u64,
            _ => return Err(self.err("_rebuild_tensor_v2: bad storage offset")),
        };
        let ints = |v: Option<Value>, what: &str| -> R<Vec<u64>> {
            match v {
                Some(Value::Tuple(items)) => items
                    .into_iter()
                    .map(|x| match x {
                        Value::Int(i) if i >= 0 => Ok(i as u64),
                        _ => Err(self.err(format!("_rebuild_tensor_v2: bad {what}"))),
                    })
                    .collect(),
                _ => Err(self.err(format!("_rebuild_tensor_v2: {what} is not a tuple"))),
            }
        };
        let shape = ints(it.next(), "size")?;
        let stride = ints(it.next(), "stride")?;
        if shape.len() != stride.len() {
            return Err(self.err("_rebuild_tensor_v2: size and stride differ in length"));
        }
        Ok(Value::Tensor(TensorRef {
            storage,
            offset,
            shape,
            stride,
        }))
    }

    /// `BINPERSID`: torch's `('storage', StorageClass, key, location, numel)`.
    fn persistent(&mut self) -> R<()> {
        let id = self.pop()?;
        let Value::Tuple(items) = id else {
            return Err(self.err(format!("persistent id is {}, not a tuple", id.kind())));
        };
        match items.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel)]
                if tag == "storage" && *numel >= 0 =>
            {
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(self.err(format!("storage key '{key}' is not a plain name")));
                }
                self.stack.push(Value::Storage(StorageRef {
                    key: key.clone(),
                    dtype: *dtype,
                    numel: *numel as u64,
                }));
                Ok(())
            }
            _ => Err(self.err(
                "persistent id is not ('storage', torch.<Type>Storage, key, location, numel)",
            )),
        }
    }

    fn run(mut self) -> R<Value> {
        loop {
            self.at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let v = self.u8()?;
                    if v > 5 {
                        return Err(self.err(format!("pickle protocol {v} is unknown")));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only
                    self.u64()?;
                }
                b'.' => {
                    // STOP
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    // TUPLE1..3
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(items));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| self.err("huge string"))?;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(self.err(format!("integer of {n} bytes does not fit 64 bits")));
                    }
                    let mut a = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    a[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(a)));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Float);
                }
                0x88 => self.stack.push(Value::Bool),
                0x89 => self.stack.push(Value::Bool),
                b'N' => self.stack.push(Value::None),
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    // MEMOIZE
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?;
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => return Err(self.err("STACK_GLOBAL without two strings")),
                    }
                }
                b'R' => self.reduce()?,
                b'Q' => self.persistent()?,
                b'b' => {
                    // BUILD: the state of an ordered dict (its `_metadata`) or of a tensor
                    // (hooks); recorded nowhere, as neither affects the weights.
                    let _state = self.pop()?;
                    let at = self.at;
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => {
                            return Err(PickleError::Malformed {
                                offset: at,
                                reason: format!("BUILD on {}", other.kind()),
                            })
                        }
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.charge(&v)?;
                    self.stack.push(v);
                }
                _ => {
                    return Err(PickleError::UnsupportedOpcode {
                        opcode: op,
                        offset: self.at,
                    })
                }
            }
        }
    }
}

/// Tensors of a state dict by dotted name. Nested dicts join their keys with '.'; entries that
/// are not tensors (counters, config values) are skipped.
pub(crate) fn collect_tensors(root: Value) -> Result<Vec<(String, TensorRef)>, String> {
    let Value::Dict(items) = root else {
        return Err(format!(
            "the checkpoint holds {}, not a dict of tensors",
            root.kind()
        ));
    };
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), items)];
    while let Some((prefix, items)) = todo.pop() {
        // From the last entry back: of two equal keys, the later one was set last.
        let mut seen = HashSet::new();
        for (k, v) in items.into_iter().rev() {
            let key = match k {
                Value::Str(s) => s,
                Value::Int(i) => i.to_string(),
                other => return Err(format!("a dict key is {}", other.kind())),
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match v {
                Value::Tensor(t) => out.push((name, t)),
                Value::Dict(inner) => todo.push((name, inner)),
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    for w in out.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(format!("tensor '{}' appears twice", w[0].0));
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny pickle writer for tests: protocol 2, the opcodes torch.save uses.
    #[derive(Default)]
    pub(crate) struct Writer(pub Vec<u8>);

    impl Writer {
        pub fn proto(&mut self) -> &mut Self {
            self.0.extend([0x80, 2]);
            self
        }
        pub fn op(&mut self, op: u8) -> &mut Self {
            self.0.push(op);
            self
        }
        pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
            self.0.push(b'c');
            self.0.extend(module.as_bytes());
            self.0.push(b'\n');
            self.0.extend(name.as_bytes());
            self.0.push(b'\n');
            self
        }
        pub fn str(&mut self, s: &str) -> &mut Self {
            self.0.push(b'X');
            self.0.extend((s.len() as u32).to_le_bytes());
            self.0.extend(s.as_bytes());
            self
        }
        pub fn int(&mut self, v: i32) -> &mut Self {
            self.0.push(b'J');
            self.0.extend(v.to_le_bytes());
            self
        }
        /// Pushes a storage reference then `_rebuild_tensor_v2(storage, offset, shape, stride,
        /// False, OrderedDict())`.
        pub fn tensor(
            &mut self,
            storage: &str,
            key: &str,
            numel: i32,
            offset: i32,
            shape: &[i32],
            stride: &[i32],
        ) -> &mut Self {
            self.global("torch._utils", "_rebuild_tensor_v2").op(b'(');
            self.op(b'(')
                .str("storage")
                .global("torch", storage)
                .str(key)
                .str("cpu")
                .int(numel)
                .op(b't')
                .op(b'Q');
            self.int(offset).op(b'(');
            for &s in shape {
                self.int(s);
            }
            self.op(b't').op(b'(');
            for &s in stride {
                self.int(s);
            }
            self.op(b't').op(0x89);
            self.global("collections", "OrderedDict")
                .op(b')')
                .op(b'R')
                .op(b't')
                .op(b'R')
        }
    }

    fn tensors_of(bytes: &[u8]) -> Vec<(String, TensorRef)> {
        collect_tensors(unpickle(bytes).unwrap()).unwrap()
    }

    #[test]
    fn reads_a_state_dict() {
        let mut w = Writer::default();
        w.proto()
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b'q')
            .op(0)
            .op(b'(')
            .str("a.weight")
            .tensor("BFloat16Storage", "0", 6, 0, &[2, 3], &[3, 1])
            .str("b")
            .tensor("FloatStorage", "1", 10, 4, &[3], &[2])
            .op(b'u');
        // `_metadata` state as torch writes it, then BUILD.
        w.op(b'}')
            .str("_metadata")
            .op(b'}')
            .op(b's')
            .op(b'b')
            .op(b'.');
        let t = tensors_of(&w.0);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].0, "a.weight");
        assert_eq!(t[0].1.storage.dtype, StorageDType::BF16);
        assert_eq!(t[0].1.shape, vec![2, 3]);
        assert_eq!(t[1].1.offset, 4);
        assert_eq!(t[1].1.stride, vec![2]);
        assert_eq!(t[1].1.storage.key, "1");
    }

    #[test]
    fn refuses_unknown_globals_by_name() {
        for (m, n) in [
            ("os", "system"),
            ("posix", "system"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("__builtin__", "getattr"),
            ("torch", "load"),
        ] {
            let mut w = Writer::default();
            w.proto()
                .global(m, n)
                .str("echo hi")
                .op(0x85)
                .op(b'R')
                .op(b'.');
            let err = unpickle(&w.0).unwrap_err();
            assert_eq!(
                err,
                PickleError::ForbiddenGlobal {
                    module: m.into(),
                    name: n.into()
                }
            );
            assert!(err.to_string().contains(&format!("{m}.{n}")), "{err}");
        }
    }

    #[test]
    fn refuses_stack_global_and_calls_of_non_callables() {
        let mut w = Writer::default();
        w.proto().str("os").str("system").op(0x93).op(b'.');
        assert!(matches!(
            unpickle(&w.0),
            Err(PickleError::ForbiddenGlobal { .. })
        ));
        // REDUCE of a storage class, of a string, of an OrderedDict with arguments.
        let mut w = Writer::default();
        w.proto()
            .global("torch", "FloatStorage")
            .op(b')')
            .op(b'R')
            .op(b'.');
        assert!(matches!(
            unpickle(&w.0),
            Err(PickleError::ForbiddenCall { .. })
        ));
        let mut w = Writer::default();
        w.proto()
            .str("os.system")
            .str("x")
            .op(0x85)
            .op(b'R')
            .op(b'.');
        assert!(matches!(
            unpickle(&w.0),
            Err(PickleError::ForbiddenCall { .. })
        ));
        let mut w = Writer::default();
        w.proto()
            .global("collections", "OrderedDict")
            .op(b']')
            .op(0x85)
            .op(b'R')
            .op(b'.');
        assert!(matches!(
            unpickle(&w.0),
            Err(PickleError::ForbiddenCall { .. })
        ));
    }

    #[test]
    fn refuses_object_building_opcodes() {
        // INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1: never in a state dict.
        for op in [b'i', b'o', 0x81, 0x92, 0x82] {
            let mut w = Writer::default();
            w.proto().op(b'(').op(op).op(b'.');
            let err = unpickle(&w.0).unwrap_err();
            assert!(
                matches!(err, PickleError::UnsupportedOpcode { opcode, .. } if opcode == op),
                "{err}"
            );
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut w = Writer::default();
        w.proto()
            .op(b'}')
            .str("a")
            .tensor("HalfStorage", "0", 4, 0, &[4], &[1])
            .op(b's')
            .op(b'.');
        let full = w.0.clone();
        assert!(unpickle(&full).is_ok());
        for n in 0..full.len() {
            assert!(unpickle(&full[..n]).is_err(), "prefix of {n} bytes");
        }
        // Every single-byte corruption either fails cleanly or parses.
        for i in 0..full.len() {
            for b in [0u8, 0x80, 0xff, b'R', b'(', b'h'] {
                let mut c = full.clone();
                c[i] = b;
                let _ = unpickle(&c);
            }
        }
    }

    #[test]
    fn large_dicts_take_linear_time_and_the_later_key_wins() {
        // 200k keys in 2.6 MB: looked up one by one, this took minutes.
        let mut w = Writer::default();
        w.proto().op(b'}').op(b'(');
        for i in 0..200_000 {
            w.str(&format!("k{i}")).op(b'N');
        }
        w.op(b'u')
            .str("k7")
            .tensor("HalfStorage", "0", 4, 0, &[4], &[1])
            .op(b's')
            .str("k7")
            .tensor("HalfStorage", "0", 4, 0, &[2], &[1])
            .op(b's')
            .op(b'.');
        let started = std::time::Instant::now();
        let t = tensors_of(&w.0);
        assert!(
            started.elapsed().as_secs_f64() < 5.0,
            "{:?}",
            started.elapsed()
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].0.as_str(), t[0].1.shape.as_slice()),
            ("k7", &[2u64][..])
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // A million nested lists in 2 MB, then a million nested tuples: dropping either
        // recursively would overflow a thread's stack.
        const N: usize = 1_000_000;
        let lists = [&b"\x80\x02"[..], &[b']'; N], &[b'a'; N - 1], b"."].concat();
        let tuples = [&b"\x80\x02"[..], &[b'('; N], &[b't'; N], b"."].concat();
        for (what, bytes) in [("lists", lists), ("tuples", tuples)] {
            let err = unpickle(&bytes).unwrap_err();
            assert!(
                err.to_string().contains("nested deeper than 64"),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn memo_bombs_are_bounded() {
        // A list that appends two copies of itself, again and again.
        let mut w = Writer::default();
        w.proto().op(b']').op(b'q').op(0);
        for _ in 0..64 {
            w.op(b'(')
                .op(b'h')
                .op(0)
                .op(b'h')
                .op(0)
                .op(b'l')
                .op(b'q')
                .op(0);
        }
        w.op(b'.');
        let err = unpickle(&w.0).unwrap_err();
        assert!(err.to_string().contains("pickle bomb"), "{err}");
    }
}
