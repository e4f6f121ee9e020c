"""Column metadata of the synthetic SME tables.

Every column except the join key ``enterprise_id`` has a :class:`ColumnInfo`:
which party holds it, which published feature group it belongs to, whether it
is numeric or categorical (categories listed, in order), how sensitive it is,
how it can be missing, and an English description with units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "BANK_COLUMNS",
    "COLUMNS",
    "CUSTOMS_CLASSES",
    "ENTITY_TYPES",
    "GROUPS",
    "ID_COLUMN",
    "INDUSTRIES",
    "LABEL_COLUMN",
    "LOAN_PRODUCTS",
    "PLATFORM_COLUMNS",
    "SENSITIVITIES",
    "SRDI_LEVELS",
    "TAXPAYER_TYPES",
    "TAX_GRADES",
    "ColumnInfo",
    "Dtype",
    "Group",
    "Missing",
    "Party",
    "Sensitivity",
]

ID_COLUMN = "enterprise_id"
"""Join key: the unified social credit code, first column of every table."""

LABEL_COLUMN = "default_12m"
"""Bank label: 90+ days past due within 12 months of the loan (0/1)."""

Party = Literal["platform", "bank"]
Group = Literal[
    "registration",
    "tax",
    "social_insurance",
    "utilities",
    "customs",
    "judicial",
    "quality_credit",
    "quality_management",
    "quality_brand",
    "quality_foundation",
    "quality_innovation",
    "key_personnel",
    "loan",
    "relationship",
    "bureau",
]
Dtype = Literal["numeric", "categorical"]
Sensitivity = Literal["public", "internal", "trade_secret", "personal"]
Missing = Literal["none", "structural", "not_at_random"]
Role = Literal["feature", "label"]

GROUPS: tuple[str, ...] = (
    "registration",
    "tax",
    "social_insurance",
    "utilities",
    "customs",
    "judicial",
    "quality_credit",
    "quality_management",
    "quality_brand",
    "quality_foundation",
    "quality_innovation",
    "key_personnel",
    "loan",
    "relationship",
    "bureau",
)
"""All feature groups, platform groups first."""

SENSITIVITIES: tuple[str, ...] = ("public", "internal", "trade_secret", "personal")

INDUSTRIES: tuple[str, ...] = (
    "A Agriculture, forestry, animal husbandry and fishery",
    "C Manufacturing",
    "E Construction",
    "F Wholesale and retail trade",
    "G Transport, storage and postal services",
    "H Accommodation and catering",
    "I Information transmission, software and IT services",
    "K Real estate",
    "L Leasing and business services",
    "M Scientific research and technical services",
    "O Resident services, repair and other services",
    "P Education",
    "Q Health and social work",
    "R Culture, sports and entertainment",
)
"""GB/T 4754-2017 sections common among SMEs (letter + English name)."""

ENTITY_TYPES: tuple[str, ...] = (
    "Limited liability company",
    "Joint-stock company",
    "Sole proprietorship",
    "Partnership",
    "Individual business",
    "Farmers' cooperative",
)
TAX_GRADES: tuple[str, ...] = ("A", "B", "M", "C", "D")
"""Tax credit grades in order of increasing risk (M = new or no revenue)."""
TAXPAYER_TYPES: tuple[str, ...] = ("General taxpayer", "Small-scale taxpayer")
CUSTOMS_CLASSES: tuple[str, ...] = ("Advanced certified", "General", "Dishonest")
SRDI_LEVELS: tuple[str, ...] = (
    "No status",
    "Innovative SME",
    "Provincial SRDI",
    "National little giant",
)
"""'Specialized, refined, distinctive, innovative' (专精特新) status ladder."""
LOAN_PRODUCTS: tuple[str, ...] = (
    "Tax-credit loan",
    "Pure credit loan",
    "Mortgage loan",
    "Guaranteed loan",
)


@dataclass(frozen=True)
class ColumnInfo:
    """Metadata of one column.

    Attributes
    ----------
    name : str
        Column name.
    party : {"platform", "bank"}
        Who holds the column.
    group : str
        Published feature group (see :data:`GROUPS`).
    dtype : {"numeric", "categorical"}
        Numeric columns are float or int; categorical columns hold strings.
    sensitivity : {"public", "internal", "trade_secret", "personal"}
        ``personal`` columns are personal information and need the
        individual's authorization.
    description : str
        English description, with units.
    categories : tuple of str or None
        Allowed levels of a categorical column, in their natural order.
    missing : {"none", "structural", "not_at_random"}
        How values can be absent.
    role : {"feature", "label"}
        ``label`` only for :data:`LABEL_COLUMN`.
    """

    name: str
    party: Party
    group: Group
    dtype: Dtype
    sensitivity: Sensitivity
    description: str
    categories: tuple[str, ...] | None = None
    missing: Missing = "none"
    role: Role = "feature"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (categories as a list).

        Returns
        -------
        dict
            Field name to value.
        """
        out = asdict(self)
        out["categories"] = None if self.categories is None else list(self.categories)
        return out


def _num(
    name: str,
    party: Party,
    group: Group,
    sensitivity: Sensitivity,
    description: str,
    missing: Missing = "none",
) -> ColumnInfo:
    return ColumnInfo(name, party, group, "numeric", sensitivity, description, missing=missing)


def _cat(
    name: str,
    party: Party,
    group: Group,
    sensitivity: Sensitivity,
    description: str,
    categories: tuple[str, ...],
    missing: Missing = "none",
) -> ColumnInfo:
    return ColumnInfo(
        name, party, group, "categorical", sensitivity, description, categories, missing
    )


def _platform() -> tuple[ColumnInfo, ...]:
    from features.synth.divisions import DIVISION_LEVELS, PROVINCES

    p: Party = "platform"
    return (
        # registration
        _num(
            "firm_age_years",
            p,
            "registration",
            "public",
            "Years since establishment as of the snapshot date.",
        ),
        _num(
            "registered_capital_10k_cny",
            p,
            "registration",
            "public",
            "Subscribed registered capital, 10k CNY.",
        ),
        _cat(
            "entity_type",
            p,
            "registration",
            "public",
            "Legal form of the market entity.",
            ENTITY_TYPES,
        ),
        _cat(
            "industry",
            p,
            "registration",
            "public",
            "Main industry, GB/T 4754-2017 section letter and name.",
            INDUSTRIES,
        ),
        _cat(
            "region",
            p,
            "registration",
            "public",
            "Province of the registering office.",
            tuple(q.name for q in PROVINCES),
        ),
        _cat(
            "division_level",
            p,
            "registration",
            "public",
            "Level of the registering office (urban district ... county).",
            DIVISION_LEVELS,
        ),
        _num(
            "abnormal_operation_listed",
            p,
            "registration",
            "public",
            "1 if currently on the list of enterprises with abnormal operations.",
        ),
        _num(
            "serious_violation_listed",
            p,
            "registration",
            "public",
            "1 if on the list of serious violations and dishonesty.",
        ),
        _num(
            "annual_report_on_time",
            p,
            "registration",
            "public",
            "1 if the last annual report was filed on time.",
        ),
        _num(
            "legal_rep_changes_3y",
            p,
            "registration",
            "public",
            "Changes of legal representative in the last 3 years.",
        ),
        # tax
        _cat(
            "tax_credit_grade",
            p,
            "tax",
            "internal",
            "Tax credit grade: A >= 90 points, B 70-89, C 40-69, D < 40, "
            "M = newly established or no revenue.",
            TAX_GRADES,
        ),
        _cat("taxpayer_type", p, "tax", "public", "VAT taxpayer status.", TAXPAYER_TYPES),
        _num(
            "vat_sales_12m_10k_cny",
            p,
            "tax",
            "trade_secret",
            "Declared VAT sales over the last 12 months, 10k CNY.",
        ),
        _num(
            "vat_sales_growth_yoy",
            p,
            "tax",
            "trade_secret",
            "Year-on-year growth of declared sales (ratio); absent for firms younger "
            "than two years or without prior-year sales.",
            "structural",
        ),
        _num(
            "zero_declaration_months_12m",
            p,
            "tax",
            "internal",
            "Months with a zero VAT declaration in the last 12.",
        ),
        _num(
            "tax_arrears_10k_cny",
            p,
            "tax",
            "internal",
            "Outstanding tax arrears, 10k CNY (0 if none).",
        ),
        # social insurance and housing fund
        _num(
            "si_insured_headcount",
            p,
            "social_insurance",
            "internal",
            "Employees covered by social insurance.",
        ),
        _num(
            "si_headcount_change_12m",
            p,
            "social_insurance",
            "internal",
            "Relative change of the insured headcount over 12 months; absent for "
            "firms younger than one year.",
            "structural",
        ),
        _num(
            "si_arrears_months_12m",
            p,
            "social_insurance",
            "internal",
            "Months with social-insurance contribution arrears in the last 12.",
        ),
        _num(
            "housing_fund_contributor",
            p,
            "social_insurance",
            "internal",
            "1 if the firm contributes to the housing provident fund.",
        ),
        # utilities
        _num(
            "elec_kwh_12m",
            p,
            "utilities",
            "internal",
            "Electricity consumption over 12 months, kWh; often absent for firms in "
            "leased offices whose meter is in the landlord's name.",
            "not_at_random",
        ),
        _num(
            "elec_yoy_change",
            p,
            "utilities",
            "internal",
            "Year-on-year change of electricity consumption (ratio); absent with "
            "elec_kwh_12m or for firms younger than two years.",
            "not_at_random",
        ),
        _num(
            "utility_arrears_count_12m",
            p,
            "utilities",
            "internal",
            "Utility bills in arrears in the last 12 months; absent with elec_kwh_12m.",
            "not_at_random",
        ),
        # customs
        _num(
            "customs_trader",
            p,
            "customs",
            "public",
            "1 if registered with customs as an importer/exporter.",
        ),
        _num(
            "customs_export_12m_10k_usd",
            p,
            "customs",
            "trade_secret",
            "Export value over 12 months, 10k USD; absent for non-traders.",
            "structural",
        ),
        _cat(
            "customs_credit_class",
            p,
            "customs",
            "public",
            "Customs enterprise credit class; absent for non-traders.",
            CUSTOMS_CLASSES,
            "structural",
        ),
        # judicial and administrative
        _num(
            "lawsuits_defendant_3y",
            p,
            "judicial",
            "public",
            "Civil lawsuits as defendant in the last 3 years.",
        ),
        _num(
            "enforcement_cases_3y",
            p,
            "judicial",
            "public",
            "Enforcement cases as judgment debtor in the last 3 years.",
        ),
        _num(
            "dishonest_debtor",
            p,
            "judicial",
            "public",
            "1 if on the list of dishonest judgment debtors (rare, very strong).",
        ),
        _num(
            "admin_penalties_3y",
            p,
            "judicial",
            "public",
            "Administrative penalties in the last 3 years.",
        ),
        # quality credit enhancement: five groups of the 2024 quality-financing notice
        _num(
            "qc_spot_check_failures_3y",
            p,
            "quality_credit",
            "public",
            "Failed product-quality spot checks in the last 3 years.",
        ),
        _num(
            "qc_product_recalls_3y",
            p,
            "quality_credit",
            "public",
            "Product recalls in the last 3 years.",
        ),
        _num(
            "qm_iso9001",
            p,
            "quality_management",
            "public",
            "1 if ISO 9001 (quality management) certified.",
        ),
        _num(
            "qm_iso14001",
            p,
            "quality_management",
            "public",
            "1 if ISO 14001 (environmental management) certified.",
        ),
        _num(
            "qm_iso45001",
            p,
            "quality_management",
            "public",
            "1 if ISO 45001 (occupational health and safety) certified.",
        ),
        _num(
            "qm_product_certificates",
            p,
            "quality_management",
            "public",
            "Valid product certifications (e.g. CCC).",
        ),
        _num(
            "qb_quality_awards", p, "quality_brand", "public", "Government quality awards received."
        ),
        _num("qb_trademarks", p, "quality_brand", "public", "Registered trademarks."),
        _num(
            "qf_standards_drafted",
            p,
            "quality_foundation",
            "public",
            "National, industry or group standards the firm helped draft.",
        ),
        _num(
            "qf_measurement_certified",
            p,
            "quality_foundation",
            "public",
            "1 if the firm holds a measurement-assurance certification.",
        ),
        _num(
            "qf_accredited_lab",
            p,
            "quality_foundation",
            "public",
            "1 if the firm runs a CNAS-accredited laboratory.",
        ),
        _num(
            "qi_invention_patents", p, "quality_innovation", "public", "Granted invention patents."
        ),
        _num(
            "qi_high_tech_enterprise",
            p,
            "quality_innovation",
            "public",
            "1 if certified as a high-tech enterprise.",
        ),
        _cat(
            "qi_srdi_status",
            p,
            "quality_innovation",
            "public",
            "'Specialized, refined, distinctive, innovative' status.",
            SRDI_LEVELS,
        ),
        _num(
            "qi_rd_expense_ratio",
            p,
            "quality_innovation",
            "trade_secret",
            "R&D expenses over sales, last fiscal year (ratio).",
        ),
        # key personnel: personal information, authorization required
        _num(
            "kp_legal_rep_age",
            p,
            "key_personnel",
            "personal",
            "Age of the legal representative, years.",
        ),
        _num(
            "kp_legal_rep_tenure_years",
            p,
            "key_personnel",
            "personal",
            "Years the legal representative has been in office.",
        ),
        _num(
            "kp_legal_rep_dishonest",
            p,
            "key_personnel",
            "personal",
            "1 if the legal representative is personally a dishonest judgment debtor.",
        ),
        _num(
            "kp_legal_rep_other_firms_abnormal",
            p,
            "key_personnel",
            "personal",
            "Other firms of the legal representative in abnormal or revoked status.",
        ),
    )


def _bank() -> tuple[ColumnInfo, ...]:
    b: Party = "bank"
    return (
        _cat("loan_product", b, "loan", "trade_secret", "Loan product.", LOAN_PRODUCTS),
        _num("loan_amount_10k_cny", b, "loan", "trade_secret", "Granted amount, 10k CNY."),
        _num("loan_term_months", b, "loan", "trade_secret", "Contractual term, months."),
        _num(
            "loan_rate_pct",
            b,
            "loan",
            "trade_secret",
            "Annual interest rate, per cent (risk-based pricing).",
        ),
        _cat(
            "borrower_industry",
            b,
            "relationship",
            "internal",
            "Borrower industry as recorded at onboarding (GB/T 4754 section).",
            INDUSTRIES,
        ),
        _num(
            "account_age_months",
            b,
            "relationship",
            "trade_secret",
            "Months since the firm opened its account at the bank.",
        ),
        _num(
            "deposit_avg_6m_10k_cny",
            b,
            "relationship",
            "trade_secret",
            "Average deposit balance over 6 months, 10k CNY.",
        ),
        _num(
            "deposit_change_6m",
            b,
            "relationship",
            "trade_secret",
            "Relative change of the deposit balance over 6 months.",
        ),
        _num(
            "settlement_inflow_monthly_10k_cny",
            b,
            "relationship",
            "trade_secret",
            "Average monthly settlement inflow through the bank, 10k CNY.",
        ),
        _num(
            "bureau_queries_6m",
            b,
            "bureau",
            "internal",
            "Credit-bureau enquiries by lenders in the last 6 months.",
        ),
        _num(
            "bureau_max_dpd_24m",
            b,
            "bureau",
            "internal",
            "Maximum days past due on any credit in the last 24 months.",
        ),
        _num(
            "bureau_existing_loans",
            b,
            "bureau",
            "internal",
            "Outstanding loans at other institutions.",
        ),
        _num(
            "bureau_existing_balance_10k_cny",
            b,
            "bureau",
            "internal",
            "Outstanding balance at other institutions, 10k CNY.",
        ),
        ColumnInfo(
            LABEL_COLUMN,
            b,
            "loan",
            "numeric",
            "trade_secret",
            "Label: 1 if the loan reached 90+ days past due within 12 months.",
            role="label",
        ),
    )


PLATFORM_COLUMNS: tuple[ColumnInfo, ...] = _platform()
"""Platform columns in table order (after ``enterprise_id``)."""
BANK_COLUMNS: tuple[ColumnInfo, ...] = _bank()
"""Bank columns in table order (after ``enterprise_id``), label last."""
COLUMNS: dict[str, ColumnInfo] = {c.name: c for c in PLATFORM_COLUMNS + BANK_COLUMNS}
"""All column metadata by name."""
