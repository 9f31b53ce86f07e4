"""RadSynth Streamlit app: `streamlit run apps/app.py [-- --data-root DIR --auditor]`.

Four pages (generate, viewer, reader study, audit) over what lies under one data root
(RADSYNTH_DATA_ROOT, default the repository). Each page body runs guarded: failures are shown
as messages, never as tracebacks.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `streamlit run apps/app.py` runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import streamlit as st

from apps import audit_page, generate_page, reader_page, viewer_page
from apps.config import load_config
from apps.ui import guarded

PAGES = {
    "Generate": generate_page.render,
    "Viewer": viewer_page.render,
    "Reader study": reader_page.render,
    "Audit": audit_page.render,
}


def main() -> None:
    st.set_page_config(page_title="RadSynth", layout="wide")
    st.set_option("client.showErrorDetails", "none")  # belt and braces: pages are guarded
    try:
        config = load_config(sys.argv[1:])
    except ValueError as exc:
        st.error(str(exc))
        return
    st.sidebar.title("RadSynth")
    page = st.sidebar.radio("Page", list(PAGES), key="page")
    st.sidebar.caption(f"Data root: {config.data_root}")
    st.sidebar.caption(f"View: {config.role}")
    guarded(lambda: PAGES[page](config))


main()
