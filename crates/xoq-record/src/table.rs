//! Small Parquet tables as pandas/pyarrow write them: nullable scalar columns and
//! (nested) lists in the standard three-level `LIST` layout, so pyarrow reads
//! `list<element: float>` exactly as it reads its own files. No Arrow in between: the
//! export's tables are a few columns of numbers, written through the column writer.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, FloatType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{Type, TypePtr};

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Parquet refused it (or the file could not be written).
    #[error("cannot write {path}: {reason}")]
    Parquet {
        /// The file.
        path: String,
        /// Parquet's message.
        reason: String,
    },
    /// Columns of different lengths, or a list column whose values do not fill its shape.
    #[error("column {0}: length does not match the table")]
    Shape(String),
}

/// One column's values, one entry per row (lists: row-major values of `shape` per row).
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// int64.
    Int64(Vec<i64>),
    /// float32.
    Float32(Vec<f32>),
    /// float64.
    Float64(Vec<f64>),
    /// UTF-8 strings.
    Str(Vec<String>),
    /// Lists of strings, any length per row.
    StrList(Vec<Vec<String>>),
    /// Arrays of float32 of the same `shape` in every row (nested lists, one level per axis).
    F32Array {
        /// Shape of each row's array.
        shape: Vec<usize>,
        /// All rows' values, row-major.
        values: Vec<f32>,
    },
    /// Arrays of float64 of one shape.
    F64Array {
        /// Shape of each row's array.
        shape: Vec<usize>,
        /// All rows' values, row-major.
        values: Vec<f64>,
    },
    /// Arrays of int64 of one shape.
    I64Array {
        /// Shape of each row's array.
        shape: Vec<usize>,
        /// All rows' values, row-major.
        values: Vec<i64>,
    },
}

impl Column {
    /// Number of rows.
    pub(crate) fn rows(&self) -> Option<usize> {
        let per = |shape: &[usize], n: usize| {
            let k: usize = shape.iter().product();
            if k == 0 {
                None
            } else {
                n.is_multiple_of(k).then_some(n / k)
            }
        };
        match self {
            Column::Int64(v) => Some(v.len()),
            Column::Float32(v) => Some(v.len()),
            Column::Float64(v) => Some(v.len()),
            Column::Str(v) => Some(v.len()),
            Column::StrList(v) => Some(v.len()),
            Column::F32Array { shape, values } => per(shape, values.len()),
            Column::F64Array { shape, values } => per(shape, values.len()),
            Column::I64Array { shape, values } => per(shape, values.len()),
        }
    }

    /// Append `other`'s rows (a column of the same kind and shape; anything else is a bug
    /// of the caller and leaves `self` unchanged).
    pub fn append(&mut self, other: Column) {
        match (self, other) {
            (Column::Int64(a), Column::Int64(b)) => a.extend(b),
            (Column::Float32(a), Column::Float32(b)) => a.extend(b),
            (Column::Float64(a), Column::Float64(b)) => a.extend(b),
            (Column::Str(a), Column::Str(b)) => a.extend(b),
            (Column::StrList(a), Column::StrList(b)) => a.extend(b),
            (
                Column::F32Array { shape, values },
                Column::F32Array {
                    shape: s,
                    values: v,
                },
            ) if *shape == s => values.extend(v),
            (
                Column::F64Array { shape, values },
                Column::F64Array {
                    shape: s,
                    values: v,
                },
            ) if *shape == s => values.extend(v),
            (
                Column::I64Array { shape, values },
                Column::I64Array {
                    shape: s,
                    values: v,
                },
            ) if *shape == s => values.extend(v),
            _ => debug_assert!(false, "appending a column of another kind"),
        }
    }

    /// The schema of this column named `name`.
    fn schema(&self, name: &str) -> Result<TypePtr, parquet::errors::ParquetError> {
        let leaf = |name: &str, physical: Physical, logical: Option<LogicalType>| {
            Type::primitive_type_builder(name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        };
        match self {
            Column::Int64(_) => leaf(name, Physical::INT64, None),
            Column::Float32(_) => leaf(name, Physical::FLOAT, None),
            Column::Float64(_) => leaf(name, Physical::DOUBLE, None),
            Column::Str(_) => leaf(name, Physical::BYTE_ARRAY, Some(LogicalType::String)),
            Column::StrList(_) => list(
                name,
                leaf("element", Physical::BYTE_ARRAY, Some(LogicalType::String))?,
                1,
            ),
            Column::F32Array { shape, .. } => {
                list(name, leaf("element", Physical::FLOAT, None)?, shape.len())
            }
            Column::F64Array { shape, .. } => {
                list(name, leaf("element", Physical::DOUBLE, None)?, shape.len())
            }
            Column::I64Array { shape, .. } => {
                list(name, leaf("element", Physical::INT64, None)?, shape.len())
            }
        }
    }
}

/// `depth` nested optional `LIST` groups around `element`, the outermost named `name`.
fn list(
    name: &str,
    element: TypePtr,
    depth: usize,
) -> Result<TypePtr, parquet::errors::ParquetError> {
    let mut inner = element;
    for level in 0..depth {
        let outer_name = if level + 1 == depth { name } else { "element" };
        let repeated = Type::group_type_builder("list")
            .with_repetition(Repetition::REPEATED)
            .with_fields(vec![inner])
            .build()?;
        inner = Arc::new(
            Type::group_type_builder(outer_name)
                .with_repetition(Repetition::OPTIONAL)
                .with_logical_type(Some(LogicalType::List))
                .with_fields(vec![Arc::new(repeated)])
                .build()?,
        );
    }
    Ok(inner)
}

/// Repetition levels of a full array of `shape` (every element defined): an element
/// repeats at the outermost axis whose index changed since the previous one.
fn rep_levels(shape: &[usize], rows: usize) -> Vec<i16> {
    let per: usize = shape.iter().product();
    let mut out = Vec::with_capacity(per * rows);
    for _ in 0..rows {
        for i in 0..per {
            if i == 0 {
                out.push(0);
                continue;
            }
            // Index i changes axis j when i is not a multiple of the product of the axes
            // inside j; the outermost such axis is the repetition level (1-based).
            let mut level = shape.len();
            let mut stride = 1;
            for (j, &n) in shape.iter().enumerate().rev() {
                stride *= n;
                if i % stride == 0 {
                    level = j;
                } else {
                    break;
                }
            }
            out.push(level as i16);
        }
    }
    out
}

/// A table: named columns of equal length, and key/value metadata for the file footer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Columns in file order.
    pub columns: Vec<(String, Column)>,
    /// Footer metadata (e.g. pandas' `pandas` key).
    pub metadata: Vec<(String, String)>,
}

impl Table {
    /// Add a column.
    pub fn push(&mut self, name: impl Into<String>, col: Column) {
        self.columns.push((name.into(), col));
    }

    /// Write the table as one row group, zstd-compressed.
    pub fn write(&self, path: &Path) -> Result<(), TableError> {
        let err = |e: &dyn std::fmt::Display| TableError::Parquet {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let rows = self
            .columns
            .first()
            .and_then(|(_, c)| c.rows())
            .unwrap_or(0);
        for (name, c) in &self.columns {
            if c.rows() != Some(rows) {
                return Err(TableError::Shape(name.clone()));
            }
        }
        let fields = self
            .columns
            .iter()
            .map(|(n, c)| c.schema(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(&e))?;
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(|e| err(&e))?;
        let kv = self
            .metadata
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_key_value_metadata(Some(kv))
            .set_created_by(format!("xoq {}", env!("CARGO_PKG_VERSION")))
            .build();
        let file = File::create(path).map_err(|e| err(&e))?;
        let mut w = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))
            .map_err(|e| err(&e))?;
        let mut rg = w.next_row_group().map_err(|e| err(&e))?;
        for (_, c) in &self.columns {
            let mut cw = rg
                .next_column()
                .map_err(|e| err(&e))?
                .ok_or_else(|| err(&"schema has fewer columns than the table"))?;
            write_column(&mut cw, c, rows).map_err(|e| err(&e))?;
            cw.close().map_err(|e| err(&e))?;
        }
        rg.close().map_err(|e| err(&e))?;
        w.close().map_err(|e| err(&e))?;
        Ok(())
    }
}

fn write_column(
    cw: &mut parquet::file::writer::SerializedColumnWriter<'_>,
    c: &Column,
    rows: usize,
) -> Result<(), parquet::errors::ParquetError> {
    let ones = |n: usize| vec![1i16; n];
    match c {
        Column::Int64(v) => {
            cw.typed::<Int64Type>()
                .write_batch(v, Some(&ones(v.len())), None)?;
        }
        Column::Float32(v) => {
            cw.typed::<FloatType>()
                .write_batch(v, Some(&ones(v.len())), None)?;
        }
        Column::Float64(v) => {
            cw.typed::<DoubleType>()
                .write_batch(v, Some(&ones(v.len())), None)?;
        }
        Column::Str(v) => {
            let b: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(s.as_str())).collect();
            cw.typed::<ByteArrayType>()
                .write_batch(&b, Some(&ones(b.len())), None)?;
        }
        Column::StrList(rows_v) => {
            // Levels: list defined (1), element present (2), element defined (3).
            let mut vals = Vec::new();
            let mut def = Vec::new();
            let mut rep = Vec::new();
            for row in rows_v {
                if row.is_empty() {
                    def.push(1);
                    rep.push(0);
                }
                for (i, s) in row.iter().enumerate() {
                    vals.push(ByteArray::from(s.as_str()));
                    def.push(3);
                    rep.push(i16::from(i > 0));
                }
            }
            cw.typed::<ByteArrayType>()
                .write_batch(&vals, Some(&def), Some(&rep))?;
        }
        Column::F32Array { shape, values } => {
            let (def, rep) = array_levels(shape, rows);
            cw.typed::<FloatType>()
                .write_batch(values, Some(&def), Some(&rep))?;
        }
        Column::F64Array { shape, values } => {
            let (def, rep) = array_levels(shape, rows);
            cw.typed::<DoubleType>()
                .write_batch(values, Some(&def), Some(&rep))?;
        }
        Column::I64Array { shape, values } => {
            let (def, rep) = array_levels(shape, rows);
            cw.typed::<Int64Type>()
                .write_batch(values, Some(&def), Some(&rep))?;
        }
    }
    Ok(())
}

/// Definition and repetition levels of full arrays: each list level adds two definition
/// levels (list present, entry present) and the element one.
fn array_levels(shape: &[usize], rows: usize) -> (Vec<i16>, Vec<i16>) {
    let rep = rep_levels(shape, rows);
    let def = vec![(2 * shape.len() + 1) as i16; rep.len()];
    (def, rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_levels_start_each_axis() {
        assert_eq!(rep_levels(&[3], 2), [0, 1, 1, 0, 1, 1]);
        // [2, 2]: (0,0) (0,1) (1,0) (1,1)
        assert_eq!(rep_levels(&[2, 2], 1), [0, 2, 1, 2]);
        // [3, 1, 1]: a new channel is a new outer list each time.
        assert_eq!(rep_levels(&[3, 1, 1], 1), [0, 1, 1]);
    }

    #[test]
    fn nested_lists_and_strings_read_back_row_by_row() {
        use parquet::file::reader::SerializedFileReader;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("n.parquet");
        let mut t = Table::default();
        t.push(
            "i",
            Column::I64Array {
                shape: vec![2],
                values: vec![1, 2, 3, 4],
            },
        );
        // Picture stats: shape (3, 1, 1).
        t.push(
            "img",
            Column::F64Array {
                shape: vec![3, 1, 1],
                values: vec![0.5, 0.25, 1.0, 2.0, 0.125, 0.75],
            },
        );
        t.push(
            "tasks",
            Column::StrList(vec![vec!["a".into(), "b".into()], vec![]]),
        );
        t.push("name", Column::Str(vec!["x".into(), "y".into()]));
        t.write(&path).expect("write");
        let reader =
            SerializedFileReader::new(std::fs::File::open(&path).expect("open")).expect("reader");
        let rows: Vec<String> = reader
            .into_iter()
            .map(|r| r.expect("row").to_string())
            .collect();
        assert_eq!(
            rows,
            [
                r#"{i: [1, 2], img: [[[0.5]], [[0.25]], [[1.0]]], tasks: ["a", "b"], name: "x"}"#,
                r#"{i: [3, 4], img: [[[2.0]], [[0.125]], [[0.75]]], tasks: [], name: "y"}"#,
            ]
        );
    }

    #[test]
    fn tables_write_and_refuse_ragged_columns() {
        let dir = tempfile::tempdir().expect("dir");
        let mut t = Table::default();
        t.push("index", Column::Int64(vec![0, 1]));
        t.push(
            "observation.state",
            Column::F32Array {
                shape: vec![2],
                values: vec![1.0, 2.0, 3.0, 4.0],
            },
        );
        t.push("tasks", Column::StrList(vec![vec!["a".into()], vec![]]));
        t.write(&dir.path().join("t.parquet")).expect("write");
        let bytes = std::fs::read(dir.path().join("t.parquet")).expect("read");
        assert_eq!(&bytes[..4], b"PAR1");
        t.push("short", Column::Float32(vec![1.0]));
        assert!(matches!(
            t.write(&dir.path().join("u.parquet")),
            Err(TableError::Shape(_))
        ));
    }
}
