"""Reader study page: a reader calls each blinded image real or synthetic and scores its realism
1-5; every rating goes to SQLite at once. Results (accuracy per condition; 50% = chance) are
shown only when no session is running in this browser, so a reader cannot infer the answers."""

from __future__ import annotations

import uuid
from pathlib import Path

import streamlit as st

from .config import AppConfig
from .paths import relative_name
from .reader_deck import build_deck, display_png, item_pixels
from .reader_store import MAX_READER_ID, Rating, ReaderStore, check_reader_id
from .ui import catalog, dataset_cached, pick_path, synthetic_set_cached

STATE = "reader_session"


def _start(config: AppConfig) -> None:
    found = catalog(config)
    reader = st.text_input(
        "Reader id",
        key="reader_id",
        max_chars=MAX_READER_ID,
        help="your initials or study code",
    )
    dataset_dir = pick_path(config, "Real images: dataset (test split)", found.datasets, "rs_data")
    set_dir = pick_path(config, "Synthetic set", found.synthetic_sets, "rs_set")
    per_origin = st.number_input("Images per origin", 1, 200, 10, key="rs_n")
    if not st.button("Start reading session", key="rs_start"):
        return
    try:
        check_reader_id(reader)
    except ValueError as exc:
        st.warning(f"Enter a reader id first: {exc}.")
        return
    if dataset_dir is None or set_dir is None:
        st.warning("Choose a dataset and a synthetic set.")
        return
    dataset = dataset_cached(dataset_dir)
    synthetic = synthetic_set_cached(set_dir)
    session = uuid.uuid4().hex
    deck = build_deck(dataset, synthetic, int(per_origin), seed=uuid.UUID(session).int % 2**32)
    st.session_state[STATE] = {
        "reader": reader.strip(),
        "session": session,
        "dataset": str(dataset_dir),
        "synthetic_set": str(set_dir),
        "deck": deck,
        "position": 0,
    }
    st.rerun()


def _rate(config: AppConfig, store: ReaderStore, state: dict) -> None:
    deck, position = state["deck"], state["position"]
    dataset_dir, set_dir = Path(state["dataset"]), Path(state["synthetic_set"])
    if position >= len(deck):
        st.success(f"Session complete: {len(deck)} images rated. Thank you, {state['reader']}.")
        if st.button("Finish and see results", key="rs_finish"):
            del st.session_state[STATE]
            st.rerun()
        return
    dataset = dataset_cached(dataset_dir)
    synthetic = synthetic_set_cached(set_dir)
    item = deck[position]
    st.progress(position / len(deck), text=f"Image {position + 1} of {len(deck)}")
    st.image(display_png(item_pixels(dataset, synthetic, item)), output_format="PNG")
    with st.form(f"rate_{state['session']}_{position}"):
        call = st.radio("This image is", ["real", "synthetic"], index=None, key="rs_call")
        realism = st.slider("Realism (1 = obviously synthetic, 5 = indistinguishable)", 1, 5, 3)
        submitted = st.form_submit_button("Save rating")
    if st.button("Stop session", key="rs_stop"):
        del st.session_state[STATE]
        st.rerun()
    if not submitted:
        return
    if call is None:
        st.warning("Choose real or synthetic before saving.")
        return
    store.record(
        Rating(
            reader=state["reader"],
            session=state["session"],
            item=item.item,
            origin=item.origin,
            call=call,
            realism=int(realism),
            condition=item.condition,
            dataset=relative_name(config.data_root, dataset_dir),
            synthetic_set=relative_name(config.data_root, set_dir),
        )
    )
    state["position"] = position + 1
    st.rerun()


def _results(store: ReaderStore) -> None:
    st.subheader("Results")
    readers = store.readers()
    if not readers:
        st.info("No rating recorded yet.")
        return
    who = st.selectbox("Reader", ["all readers", *readers], key="rs_results_reader")
    rows = store.accuracy(None if who == "all readers" else who)
    st.caption(
        "Accuracy = share of correct real/synthetic calls. Near 50% the reader cannot tell "
        "synthetic from real images; near 100% the synthetic images are recognisable."
    )
    st.dataframe(
        [
            {
                "condition": r.condition,
                "ratings": r.ratings,
                "correct": r.correct,
                "accuracy %": round(100 * r.accuracy, 1),
                "real called real": f"{r.real_as_real}/{r.real_total}",
                "synthetic called synthetic": f"{r.synthetic_as_synthetic}/{r.synthetic_total}",
                "realism real": None
                if r.mean_realism_real is None
                else round(r.mean_realism_real, 2),
                "realism synthetic": None
                if r.mean_realism_synthetic is None
                else round(r.mean_realism_synthetic, 2),
            }
            for r in rows
        ],
        hide_index=True,
    )
    st.download_button(
        "Download all ratings (CSV)",
        data=store.csv_bytes(None if who == "all readers" else who),
        file_name="reader-study-ratings.csv",
        mime="text/csv",
        key="rs_download",
    )


def render(config: AppConfig) -> None:
    st.header("Reader study")
    store = ReaderStore(config.reader_db)
    state = st.session_state.get(STATE)
    if state:
        _rate(config, store, state)
        return
    st.write(
        "Images from the dataset's test split and from a synthetic set are shown one at a time "
        "in random order, without names or origins."
    )
    _start(config)
    _results(store)
