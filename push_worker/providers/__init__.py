"""Push providers behind one interface (``base.PushProvider``), chosen per platform."""
