"""read_captures on a real local Dask cluster (two worker processes) gives the rows of
arrow.to_table, and its to_parquet output reads back the same."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus import FIXTURES, repeated

from ebpfwire.columnar import arrow
from ebpfwire.columnar.export import ExportError

distributed = pytest.importorskip("distributed")
ebpfwire_dask = pytest.importorskip("ebpfwire.columnar.dask")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_the_real_dask_package_is_not_shadowed():
    import dask.dataframe

    assert ebpfwire_dask.dd is dask.dataframe
    assert ebpfwire_dask.__name__ == "ebpfwire.columnar.dask"


def test_read_captures_on_a_local_cluster_equals_to_table(client, tmp_path):
    big = repeated(FIXTURES / "real-workload.ewcap", tmp_path / "big.ewcap", 60)
    paths = [FIXTURES / "damaged.ewcap", FIXTURES / "real-workload.ewcap",
             FIXTURES / "real-namespaces.ewcap", big]
    frame = ebpfwire_dask.read_captures(paths, split_bytes=128 << 10)
    assert frame.npartitions >= len(paths)
    want = arrow.to_table(paths)
    got = pa.Table.from_pandas(frame.compute(), preserve_index=False)
    assert got.schema.equals(want.schema, check_metadata=False)
    assert got.num_rows == want.num_rows == 147 * 61 + 37 + 7
    assert got.to_pylist() == want.to_pylist()
    assert len(client.scheduler_info()["workers"]) == 2

    frame.to_parquet(tmp_path / "out")  # part.0.parquet, part.1.parquet, ... part.10...
    files = sorted((tmp_path / "out").glob("part.*.parquet"), key=lambda f: int(f.name[5:-8]))
    assert len(files) == frame.npartitions
    back = pa.concat_tables(pq.read_table(f, columns=want.column_names) for f in files)
    assert back.to_pylist() == want.to_pylist()


def test_a_glob_names_captures_in_sorted_order(client):
    frame = ebpfwire_dask.read_captures(str(FIXTURES / "real-*.ewcap"))
    want = arrow.to_table([FIXTURES / "real-namespaces.ewcap", FIXTURES / "real-workload.ewcap"])
    assert pa.Table.from_pandas(frame.compute(), preserve_index=False).to_pylist() \
        == want.to_pylist()


def test_bad_input_is_refused_before_any_work(tmp_path):
    with pytest.raises(ExportError, match="no capture matches"):
        ebpfwire_dask.read_captures(str(tmp_path / "*.ewcap"))
    with pytest.raises(ExportError, match="one context layout"):
        ebpfwire_dask.read_captures([FIXTURES / "layout-classic.ewcap",
                                     FIXTURES / "layout-hash.ewcap"])


def test_strict_stops_at_a_damaged_sample_and_says_where(client):
    frame = ebpfwire_dask.read_captures(FIXTURES / "damaged.ewcap", strict=True)
    with pytest.raises(ExportError, match="file offset 203 of .*damaged.ewcap"):
        frame.compute()
