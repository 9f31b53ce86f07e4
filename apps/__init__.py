"""Streamlit app for clinicians and auditors."""
