"""Administrative divisions (GB/T 2260) used as registering offices.

A small, curated subset of real division codes: urban districts, county-level
cities and counties of provinces where most SMEs are registered, plus a few
provincial/municipal registration offices. Weights are rough shares of
registered market entities; risk and trade tilts are stylised.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DIVISIONS",
    "DIVISION_LEVELS",
    "PROVINCES",
    "Division",
    "Province",
]

DIVISION_LEVELS: tuple[str, ...] = (
    "Provincial or municipal",
    "Urban district",
    "County-level city",
    "County",
)
"""Levels of the registering office, from most central to most rural."""


@dataclass(frozen=True)
class Province:
    """A province-level region.

    Attributes
    ----------
    name : str
        English name, used as the ``region`` category.
    share : float
        Rough share of registered enterprises.
    risk : float
        Additive default-logit tilt (north-east and west riskier).
    coastal : bool
        Coastal provinces trade more.
    """

    name: str
    share: float
    risk: float
    coastal: bool


@dataclass(frozen=True)
class Division:
    """A registering office.

    Attributes
    ----------
    code : int
        Six-digit GB/T 2260 code.
    name : str
        English name (for documentation only).
    province : str
        Province name.
    level : str
        One of :data:`DIVISION_LEVELS`.
    weight : float
        Share of all registrations (province share x within-province share).
    """

    code: int
    name: str
    province: str
    level: str
    weight: float


PROVINCES: tuple[Province, ...] = (
    Province("Guangdong", 0.14, -0.10, True),
    Province("Jiangsu", 0.10, -0.10, True),
    Province("Zhejiang", 0.09, -0.10, True),
    Province("Shandong", 0.08, 0.00, True),
    Province("Shanghai", 0.05, -0.15, True),
    Province("Beijing", 0.05, -0.15, False),
    Province("Henan", 0.05, 0.05, False),
    Province("Fujian", 0.045, -0.05, True),
    Province("Sichuan", 0.045, 0.05, False),
    Province("Hubei", 0.04, 0.05, False),
    Province("Hebei", 0.04, 0.10, True),
    Province("Anhui", 0.04, 0.05, False),
    Province("Hunan", 0.035, 0.05, False),
    Province("Chongqing", 0.025, 0.05, False),
    Province("Shaanxi", 0.025, 0.10, False),
    Province("Liaoning", 0.025, 0.25, True),
    Province("Jiangxi", 0.02, 0.10, False),
    Province("Guangxi", 0.02, 0.15, True),
    Province("Tianjin", 0.015, 0.05, True),
    Province("Yunnan", 0.02, 0.15, False),
    Province("Heilongjiang", 0.015, 0.30, False),
    Province("Jilin", 0.01, 0.30, False),
    Province("Inner Mongolia", 0.01, 0.20, False),
    Province("Gansu", 0.01, 0.25, False),
)

_P, _U, _CC, _C = DIVISION_LEVELS

# (code, name, province, level, within-province share)
_RAW: tuple[tuple[int, str, str, str, float], ...] = (
    (440000, "Guangdong provincial", "Guangdong", _P, 0.03),
    (440300, "Shenzhen municipal", "Guangdong", _P, 0.05),
    (440106, "Tianhe, Guangzhou", "Guangdong", _U, 0.12),
    (440103, "Liwan, Guangzhou", "Guangdong", _U, 0.06),
    (440303, "Luohu, Shenzhen", "Guangdong", _U, 0.08),
    (440304, "Futian, Shenzhen", "Guangdong", _U, 0.10),
    (440305, "Nanshan, Shenzhen", "Guangdong", _U, 0.12),
    (440306, "Bao'an, Shenzhen", "Guangdong", _U, 0.12),
    (441900, "Dongguan", "Guangdong", _P, 0.12),
    (442000, "Zhongshan", "Guangdong", _P, 0.06),
    (440604, "Chancheng, Foshan", "Guangdong", _U, 0.05),
    (440606, "Shunde, Foshan", "Guangdong", _U, 0.06),
    (441781, "Yangchun", "Guangdong", _CC, 0.03),
    (320102, "Xuanwu, Nanjing", "Jiangsu", _U, 0.15),
    (320505, "Huqiu, Suzhou", "Jiangsu", _U, 0.15),
    (320214, "Xinwu, Wuxi", "Jiangsu", _U, 0.12),
    (320582, "Zhangjiagang", "Jiangsu", _CC, 0.14),
    (320583, "Kunshan", "Jiangsu", _CC, 0.18),
    (321281, "Xinghua", "Jiangsu", _CC, 0.12),
    (320322, "Pei County", "Jiangsu", _C, 0.14),
    (330106, "Xihu, Hangzhou", "Zhejiang", _U, 0.14),
    (330108, "Binjiang, Hangzhou", "Zhejiang", _U, 0.12),
    (330203, "Haishu, Ningbo", "Zhejiang", _U, 0.12),
    (330302, "Lucheng, Wenzhou", "Zhejiang", _U, 0.10),
    (330782, "Yiwu", "Zhejiang", _CC, 0.20),
    (330481, "Haining", "Zhejiang", _CC, 0.14),
    (330522, "Changxing County", "Zhejiang", _C, 0.18),
    (370102, "Lixia, Jinan", "Shandong", _U, 0.20),
    (370202, "Shinan, Qingdao", "Shandong", _U, 0.18),
    (370212, "Laoshan, Qingdao", "Shandong", _U, 0.12),
    (370781, "Qingzhou", "Shandong", _CC, 0.18),
    (371082, "Rongcheng", "Shandong", _CC, 0.14),
    (370725, "Changle County", "Shandong", _C, 0.18),
    (310000, "Shanghai municipal", "Shanghai", _P, 0.06),
    (310115, "Pudong New Area", "Shanghai", _U, 0.34),
    (310104, "Xuhui", "Shanghai", _U, 0.15),
    (310112, "Minhang", "Shanghai", _U, 0.20),
    (310120, "Fengxian", "Shanghai", _U, 0.13),
    (310151, "Chongming", "Shanghai", _U, 0.12),
    (110000, "Beijing municipal", "Beijing", _P, 0.06),
    (110105, "Chaoyang", "Beijing", _U, 0.34),
    (110108, "Haidian", "Beijing", _U, 0.30),
    (110106, "Fengtai", "Beijing", _U, 0.15),
    (110115, "Daxing", "Beijing", _U, 0.15),
    (410105, "Jinshui, Zhengzhou", "Henan", _U, 0.40),
    (410182, "Xingyang", "Henan", _CC, 0.20),
    (411281, "Yima", "Henan", _CC, 0.10),
    (410122, "Zhongmu County", "Henan", _C, 0.30),
    (350102, "Gulou, Fuzhou", "Fujian", _U, 0.25),
    (350203, "Siming, Xiamen", "Fujian", _U, 0.25),
    (350582, "Jinjiang", "Fujian", _CC, 0.25),
    (350583, "Nan'an", "Fujian", _CC, 0.13),
    (350524, "Anxi County", "Fujian", _C, 0.12),
    (510104, "Jinjiang, Chengdu", "Sichuan", _U, 0.30),
    (510107, "Wuhou, Chengdu", "Sichuan", _U, 0.30),
    (510181, "Dujiangyan", "Sichuan", _CC, 0.20),
    (510121, "Jintang County", "Sichuan", _C, 0.20),
    (420106, "Wuchang, Wuhan", "Hubei", _U, 0.30),
    (420111, "Hongshan, Wuhan", "Hubei", _U, 0.30),
    (420115, "Jiangxia, Wuhan", "Hubei", _U, 0.20),
    (420684, "Yicheng", "Hubei", _CC, 0.20),
    (130104, "Qiaoxi, Shijiazhuang", "Hebei", _U, 0.40),
    (130181, "Xinji", "Hebei", _CC, 0.30),
    (130123, "Zhengding County", "Hebei", _C, 0.30),
    (340104, "Shushan, Hefei", "Anhui", _U, 0.40),
    (340602, "Duji, Huaibei", "Anhui", _U, 0.20),
    (340181, "Chaohu", "Anhui", _CC, 0.15),
    (340621, "Suixi County", "Anhui", _C, 0.25),
    (430104, "Yuelu, Changsha", "Hunan", _U, 0.40),
    (430181, "Liuyang", "Hunan", _CC, 0.30),
    (430121, "Changsha County", "Hunan", _C, 0.30),
    (500103, "Yuzhong", "Chongqing", _U, 0.35),
    (500112, "Yubei", "Chongqing", _U, 0.45),
    (500229, "Chengkou County", "Chongqing", _C, 0.20),
    (610113, "Yanta, Xi'an", "Shaanxi", _U, 0.45),
    (610104, "Lianhu, Xi'an", "Shaanxi", _U, 0.35),
    (610581, "Hancheng", "Shaanxi", _CC, 0.20),
    (210102, "Heping, Shenyang", "Liaoning", _U, 0.40),
    (210202, "Zhongshan, Dalian", "Liaoning", _U, 0.35),
    (210281, "Wafangdian", "Liaoning", _CC, 0.25),
    (360102, "Donghu, Nanchang", "Jiangxi", _U, 0.65),
    (360781, "Ruijin", "Jiangxi", _CC, 0.35),
    (450103, "Qingxiu, Nanning", "Guangxi", _U, 0.65),
    (450481, "Cenxi", "Guangxi", _CC, 0.35),
    (120116, "Binhai New Area", "Tianjin", _U, 0.60),
    (120104, "Nankai", "Tianjin", _U, 0.40),
    (530102, "Wuhua, Kunming", "Yunnan", _U, 0.65),
    (530181, "Anning", "Yunnan", _CC, 0.35),
    (230103, "Nangang, Harbin", "Heilongjiang", _U, 0.65),
    (230183, "Shangzhi", "Heilongjiang", _CC, 0.35),
    (220102, "Nanguan, Changchun", "Jilin", _U, 1.00),
    (150102, "Xincheng, Hohhot", "Inner Mongolia", _U, 0.60),
    (152201, "Ulanhot", "Inner Mongolia", _CC, 0.40),
    (620102, "Chengguan, Lanzhou", "Gansu", _U, 0.60),
    (620105, "Anning, Lanzhou", "Gansu", _U, 0.40),
)


def _build() -> tuple[Division, ...]:
    share = {p.name: p.share for p in PROVINCES}
    within: dict[str, float] = {}
    for _, _, prov, _, w in _RAW:
        within[prov] = within.get(prov, 0.0) + w
    total = sum(share.values())
    return tuple(
        Division(code, name, prov, level, share[prov] / total * w / within[prov])
        for code, name, prov, level, w in _RAW
    )


DIVISIONS: tuple[Division, ...] = _build()
"""Registering offices with weights summing to one."""
