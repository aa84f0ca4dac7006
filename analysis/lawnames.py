"""The size laws `fit --law` names, in a module that imports nothing numerical, so that the
command line can offer them without loading the analysis stack."""

# joint: mixture and N; joint_data: plus each domain's tokens counted with their repetitions;
# +recency: each stage's tokens fade with the tokens trained after it; +overfit: a term that
# lets the loss rise with repetition (+overfit_linear: the same, linear past an onset);
# +overfit_n: that term growing with N to a ceiling;
# +forget: a domain left out of the last stages is forgotten, more the longer they are;
# +revert: such a domain's loss goes back toward that of a model that never saw it, at most a
# fitted share of the way (analysis/datalaw.py)
LAWS = (
    "auto",
    "joint",
    "joint_data",
    "joint_data+recency",
    "joint_data+overfit",
    "joint_data+recency+overfit",
    "joint_data+forget",
    "joint_data+overfit+forget",
    "joint_data+revert",
    "joint_data+overfit+revert",
    # the overfitting term growing with N to a ceiling: at matched epochs a larger model
    # memorises more of a small sample
    "joint_data+overfit+overfit_n",
    "joint_data+recency+overfit+overfit_n",
    # and falling again past its midpoint: at matched epochs the loss of a heavily repeated
    # domain rose from "1M" to "2M" and fell back by "8M" on codemix's ladders
    "joint_data+overfit+overfit_n+overfit_fall",
    # the overfitting term linear in the epochs past an onset: by --law only, not in auto's
    # contest, whose checks (the largest size held out) prefer the power law's onset while
    # this form holds further past the ladder's epochs
    "joint_data+overfit_linear",
    "joint_data+recency+overfit_linear",
    "joint_data+overfit_linear+forget",
    "joint_data+overfit_linear+revert",
)
OPT_IN_TERMS = ("overfit_linear", "overfit_fall")  # terms of laws `auto` leaves out
# how R*, the repetitions' half-life, is fitted: one for all domains, one per domain, or
# whichever of the two predicts held-out runs better (analysis/datalaw.py)
R_STAR_MODES = ("auto", "shared", "per-domain")
# the point a size law with a tie predicts: the contest's winner alone, or the median of the
# winner's and the tied laws' predictions (analysis/datalaw.py `tie_point`)
TIE_POINTS = ("winner", "median")
# past the ladder's most epochs, the power overfitting term (+overfit) goes on along its
# tangent at the ladder's edge, or as the power it was fitted as (analysis/_lawterms.py)
OVERFIT_PAST = ("tangent", "power")


def extra_terms(name: str) -> tuple[str, ...]:
    """The optional terms a law name carries: joint_data+recency -> ("recency",)."""
    return tuple(name.split("+")[1:])


def is_sub_law(sub: str, law: str) -> bool:
    """Whether `sub` is `law` with some of its optional terms left out."""
    return sub != "joint" and law != "joint" and set(extra_terms(sub)) <= set(extra_terms(law))
