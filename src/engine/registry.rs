//! Registry runs: walk the OpenG2P registry page by page and send each page to MTS.
