"""Ingestion: radiology sources (folders, label tables, DICOM, NIfTI, MedMNIST) into the dataset format."""
