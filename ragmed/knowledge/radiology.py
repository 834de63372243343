"""A small hand-written radiology vocabulary: anatomy, imaging modalities, views and planes, contrast, devices and
the descriptive findings of imaging reports ("opacity", "mass", "lucency" …), with their common report wordings.

Written for ragmed from general radiology usage (the terms of the Fleischner Society glossary and of everyday
report language); no licensed vocabulary (RadLex, FMA, SNOMED CT) is copied. Each entry names the MeSH descriptor
it corresponds to (by heading, resolved against the installed MeSH descriptors); the build links the entry to it by
an exact cross-reference and the two become one concept. The vocabulary was written after looking at which kinds
of terms IU X-ray reports are indexed with (anatomy heads such as "Lung", descriptive tags such as "Opacity");
its report wordings are general, not learned from those reports.

Node ids ``RAD:<slug>``, source ``RAD``; semantic types are UMLS type names.
"""
from __future__ import annotations

import re

from ragmed.knowledge.schema import concept

BODY = "Body Part, Organ, or Organ Component"
PROC = "Diagnostic Procedure"
SPATIAL = "Spatial Concept"
FINDING = "Finding"
DEVICE = "Medical Device"
SUBSTANCE = "Pharmacologic Substance"

# (name, type, MeSH heading or "", synonyms separated by "|")
ENTRIES: list[tuple[str, str, str, str]] = [
    # anatomy
    ("lung", BODY, "Lung", "lungs|lung field|lung fields|pulmonary parenchyma|lung parenchyma"),
    ("heart", BODY, "Heart", "cardiac silhouette|heart size|cardiac shadow|cardiomediastinal silhouette"),
    ("liver", BODY, "Liver", "hepatic parenchyma"),
    ("kidney", BODY, "Kidney", "kidneys"),
    ("brain", BODY, "Brain", "brain parenchyma"),
    ("spleen", BODY, "Spleen", ""),
    ("pancreas", BODY, "Pancreas", ""),
    ("aorta", BODY, "Aorta", "aortic knob|aortic arch"),
    ("thoracic aorta", BODY, "Aorta, Thoracic", "descending thoracic aorta|descending aorta"),
    ("abdominal aorta", BODY, "Aorta, Abdominal", ""),
    ("diaphragm", BODY, "Diaphragm", "hemidiaphragm|hemidiaphragms|diaphragms"),
    ("mediastinum", BODY, "Mediastinum", "mediastinal contours|mediastinal silhouette"),
    ("pleura", BODY, "Pleura", "pleural space|pleural spaces"),
    ("spine", BODY, "Spine", "vertebral column|spinal column"),
    ("thoracic vertebrae", BODY, "Thoracic Vertebrae", "thoracic spine|dorsal spine|thoracic vertebra"),
    ("lumbar vertebrae", BODY, "Lumbar Vertebrae", "lumbar spine|lumbar vertebra"),
    ("cervical vertebrae", BODY, "Cervical Vertebrae", "cervical spine|cervical vertebra"),
    ("ribs", BODY, "Ribs", "rib"),
    ("clavicle", BODY, "Clavicle", "clavicles"),
    ("scapula", BODY, "Scapula", "scapulae"),
    ("sternum", BODY, "Sternum", ""),
    ("trachea", BODY, "Trachea", ""),
    ("bronchi", BODY, "Bronchi", "bronchus"),
    ("thorax", BODY, "Thorax", "chest"),
    ("abdomen", BODY, "Abdomen", ""),
    ("abdominal cavity", BODY, "Abdominal Cavity", "peritoneal cavity"),
    ("pelvis", BODY, "Pelvis", ""),
    ("skull", BODY, "Skull", ""),
    ("femur", BODY, "Femur", ""),
    ("tibia", BODY, "Tibia", "tibial"),
    ("fibula", BODY, "Fibula", ""),
    ("humerus", BODY, "Humerus", ""),
    ("shoulder", BODY, "Shoulder", "shoulders"),
    ("knee", BODY, "Knee", ""),
    ("hip", BODY, "Hip", ""),
    ("colon", BODY, "Colon", ""),
    ("small intestine", BODY, "Intestine, Small", "small bowel"),
    ("stomach", BODY, "Stomach", ""),
    ("esophagus", BODY, "Esophagus", "oesophagus"),
    ("gallbladder", BODY, "Gallbladder", "gall bladder"),
    ("urinary bladder", BODY, "Urinary Bladder", ""),
    ("prostate", BODY, "Prostate", "prostate gland"),
    ("uterus", BODY, "Uterus", ""),
    ("ovary", BODY, "Ovary", "ovaries"),
    ("breast", BODY, "Breast", "breasts"),
    ("thyroid gland", BODY, "Thyroid Gland", "thyroid"),
    ("lymph nodes", BODY, "Lymph Nodes", "lymph node"),
    ("pulmonary artery", BODY, "Pulmonary Artery", "pulmonary arteries"),
    ("bone", BODY, "Bone and Bones", "bones|bony structures|osseous structures"),
    ("mandible", BODY, "Mandible", ""),
    ("orbit", BODY, "Orbit", ""),
    ("paranasal sinuses", BODY, "Paranasal Sinuses", ""),
    ("pericardium", BODY, "Pericardium", ""),
    ("thoracic wall", BODY, "Thoracic Wall", "chest wall"),
    ("abdominal wall", BODY, "Abdominal Wall", ""),
    ("costophrenic angle", BODY, "", "costophrenic angles|costophrenic sulcus"),
    ("hilum of lung", BODY, "", "hilum|hila|hilar"),
    # imaging: modalities, views, planes, contrast
    ("radiography", PROC, "Radiography", "radiograph|radiographs|x-ray|x ray|plain film|plain films"),
    ("chest radiography", PROC, "Radiography, Thoracic", "chest x-ray|chest radiograph|chest film|CXR"),
    ("computed tomography", PROC, "Tomography, X-Ray Computed", "CT|CT scan|computed tomogram|CAT scan"),
    ("magnetic resonance imaging", PROC, "Magnetic Resonance Imaging", "MRI|MR imaging|magnetic resonance"),
    ("ultrasonography", PROC, "Ultrasonography", "ultrasound|sonography|sonogram"),
    ("mammography", PROC, "Mammography", "mammogram"),
    ("positron emission tomography", PROC, "Positron-Emission Tomography", "PET|PET scan"),
    ("angiography", PROC, "Angiography", "angiogram"),
    ("fluoroscopy", PROC, "Fluoroscopy", ""),
    ("contrast media", SUBSTANCE, "Contrast Media", "contrast agent|contrast material|contrast medium|"
                                                     "intravenous contrast|IV contrast|oral contrast"),
    ("axial plane", SPATIAL, "", "axial|transverse plane"),
    ("coronal plane", SPATIAL, "", "coronal"),
    ("sagittal plane", SPATIAL, "", "sagittal"),
    ("frontal view", SPATIAL, "", "frontal|posteroanterior|anteroposterior|PA view|AP view"),
    ("lateral view", SPATIAL, "", "lateral projection"),
    # descriptive imaging findings (general radiology terms)
    ("opacity", FINDING, "", "opacities|opacification|opacified"),
    ("mass", FINDING, "", "masses|tumor mass|tumour mass|tumor masses"),
    ("nodule", FINDING, "", "nodules|nodular opacity|nodular density"),
    ("density", FINDING, "", "densities"),
    ("lucency", FINDING, "", "lucencies|radiolucency"),
    ("consolidation", FINDING, "", "airspace consolidation|air space consolidation"),
    ("infiltrate", FINDING, "", "infiltrates|infiltration"),
    ("airspace disease", FINDING, "", "air space disease|airspace opacity|airspace opacities"),
    ("interstitial markings", FINDING, "", "interstitial marking|bronchovascular markings|lung markings|"
                                            "interstitial prominence"),
    ("calcified granuloma", FINDING, "", "calcified granulomas|calcified nodule|calcified nodules"),
    ("granuloma", FINDING, "Granuloma", "granulomas"),
    ("calcification", FINDING, "Calcinosis", "calcifications|calcified|calcinosis"),
    ("scarring", FINDING, "Cicatrix", "scar|scars|cicatrix|fibrotic scarring"),
    ("hyperinflation", FINDING, "", "hyperinflated|hyperexpanded|hyperexpansion|hyperaeration|hyperinflated lungs"),
    ("hypoinflation", FINDING, "", "low lung volumes|low lung volume|hypoinflated|hypoaeration|"
                                   "decreased lung volumes|low inspiratory volumes"),
    ("tortuous aorta", FINDING, "", "aortic tortuosity|tortuosity of the aorta|tortuous thoracic aorta"),
    ("degenerative changes", FINDING, "", "degenerative change|degenerative disease"),
    ("osteophyte", FINDING, "Osteophyte", "osteophytes|osteophytosis|spurring"),
    ("volume loss", FINDING, "", "loss of volume"),
    ("thickening", FINDING, "", "wall thickening"),
    ("cavitation", FINDING, "", "cavitary lesion|cavitary lesions"),
    ("air-fluid level", FINDING, "", "air fluid level|air-fluid levels"),
    ("fracture", FINDING, "Fractures, Bone", "fractures|fractured"),
    ("deformity", FINDING, "", "deformities"),
    ("elevated hemidiaphragm", FINDING, "", "elevation of the hemidiaphragm|hemidiaphragm elevation"),
    ("flattened diaphragm", FINDING, "", "flattened hemidiaphragms|flattening of the diaphragm|"
                                         "flattened diaphragms|diaphragmatic flattening"),
    ("blunting of the costophrenic angle", FINDING, "", "costophrenic blunting|blunted costophrenic angle|"
                                                        "blunting of the costophrenic angles"),
    ("spinal fusion", FINDING, "Spinal Fusion", ""),
    ("enhancement", FINDING, "", "enhancing"),
    # devices
    ("indwelling catheter", DEVICE, "Catheters, Indwelling", "central venous catheter|central line|PICC|"
                                                             "port-a-cath|dialysis catheter|catheter"),
    ("surgical clips", DEVICE, "Surgical Instruments", "surgical clip|sternotomy wires|sternotomy wire|"
                                                       "surgical staples"),
    ("stent", DEVICE, "Stents", "stents"),
    ("pacemaker", DEVICE, "Pacemaker, Artificial", "pacemaker leads|pacer|cardiac pacemaker"),
    ("foreign body", FINDING, "Foreign Bodies", "foreign bodies"),
]


# UMLS CUIs of entries, entered by hand and each checked against public tables that cite it (the DICOM PS3.16
# context groups' UMLSConceptUID values, and public concept lists that name the concept); entries not listed have
# no CUI here. These are the only hand-entered CUIs in ragmed; every other CUI comes from a source's own xrefs.
CUIS = {
    "lung": "C0024109", "heart": "C0018787", "liver": "C0023884", "kidney": "C0022646", "brain": "C0006104",
    "spleen": "C0037993", "pancreas": "C0030274", "breast": "C0006141", "bronchi": "C0006255", "trachea": "C0040578",
    "sternum": "C0038293", "stomach": "C0038351", "prostate": "C0033572", "thyroid gland": "C0040132",
    "gallbladder": "C0016976", "urinary bladder": "C0005682", "pelvis": "C0030797", "knee": "C0022742",
    "hip": "C0019552", "spine": "C0037949", "lymph nodes": "C0024204", "ribs": "C0035561", "scapula": "C0036277",
    "bone": "C0262950", "aorta": "C0003483", "diaphragm": "C0011980", "mediastinum": "C0025066",
    "pleura": "C0032225", "chest radiography": "C0039985", "computed tomography": "C0040405",
    "magnetic resonance imaging": "C0024485", "consolidation": "C0521530", "nodule": "C0028259",
    "mass": "C0577559", "infiltrate": "C0332448",
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def radiology_graph(mesh_ids: dict[str, str] | None = None):
    """The vocabulary as a graph; ``mesh_ids`` (heading → descriptor id) resolves each entry's MeSH heading."""
    import networkx as nx

    G = nx.MultiDiGraph()
    mesh_ids = mesh_ids or {}
    for name, ty, heading, syns in ENTRIES:
        nid = f"RAD:{slug(name)}"
        xrefs = {}
        if heading and heading in mesh_ids:
            xrefs["MSH"] = [mesh_ids[heading]]
        if name in CUIS:
            xrefs["UMLS"] = [CUIS[name]]
        G.add_node(nid, **concept(nid, name, "RAD", synonyms=[s for s in syns.split("|") if s], types=[ty],
                                  xrefs=xrefs))
    G.graph["sources"] = [{"name": "RAD", "package": "ragmed", "terms": len(ENTRIES),
                           "hand_entered_cuis": len(CUIS),
                           "licence": "ragmed's own hand-written list (same licence as ragmed)"}]
    return G
